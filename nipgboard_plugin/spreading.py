"""Label spreading over the kNN graph of all images, and the graph kept per dataset and network.

Used by :mod:`.predict` (methods ``spread``, ``blend`` and ``all``). The graph depends on the features
alone, so :func:`spread_graph` builds it once (70,000 images: about a minute on 2 cores) and keeps it
beside the network's predictions; a spreading over it then takes a second or two.
"""
import numpy as np


def _l2(X):
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class LabelSpreading:
    """Label spreading over a symmetric kNN graph of all images (train, test and pool).

    ``fit(X, y)`` with ``y`` = class code for labelled images and -1 for the rest; the graph is built once
    and reused by :meth:`spread` for other label sets (cross-validation). ``alpha`` is how much a
    label is smoothed along the graph versus kept (0..1). Fitted: ``graph_`` (normalised affinity),
    ``proba_`` (class probabilities of every row of X).
    """

    def __init__(self, k=10, alpha=0.9, pca_dims=64, max_iter=40, random_state=0):
        self.k = k
        self.alpha = alpha
        self.pca_dims = pca_dims
        self.max_iter = max_iter
        self.random_state = random_state

    def build_graph(self, X):
        import scipy.sparse as sp
        from sklearn.decomposition import PCA
        from sklearn.neighbors import NearestNeighbors

        Z = _l2(X)
        if self.pca_dims and Z.shape[1] > self.pca_dims and len(Z) > self.pca_dims:
            Z = PCA(n_components=int(self.pca_dims), random_state=self.random_state).fit_transform(Z)
            Z = _l2(Z)
        n = len(Z)
        k = max(1, min(int(self.k), n - 1))
        dist, ind = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
        dist, ind = dist[:, 1:], ind[:, 1:]
        sigma = max(float(np.median(dist)), 1e-6)
        w = np.exp(-(dist / sigma) ** 2).ravel()
        W = sp.csr_matrix((w, (np.repeat(np.arange(n), k), ind.ravel())), shape=(n, n))
        W = W.maximum(W.T)
        d = np.asarray(W.sum(axis=1)).ravel()
        dinv = 1.0 / np.sqrt(np.maximum(d, 1e-12))
        self.graph_ = sp.diags(dinv) @ W @ sp.diags(dinv)
        return self

    def spread(self, y, n_classes):
        y = np.asarray(y, dtype=np.int64)
        Y0 = np.zeros((len(y), n_classes))
        lab = y >= 0
        Y0[np.flatnonzero(lab), y[lab]] = 1.0
        F = Y0.copy()
        for _ in range(int(self.max_iter)):
            F = self.alpha * (self.graph_ @ F) + (1 - self.alpha) * Y0
        s = F.sum(axis=1, keepdims=True)
        uniform = np.full(n_classes, 1.0 / n_classes)
        return np.where(s > 1e-12, F / np.maximum(s, 1e-12), uniform)

    def fit(self, X, y, n_classes=None):
        self.build_graph(X)
        n_classes = int(n_classes if n_classes is not None else np.max(y) + 1)
        self.proba_ = self.spread(y, n_classes)
        return self


GRAPH_FILE = "spread_graph.npz"


def features_fingerprint(image_ids, X):
    """A cheap identity of a feature matrix: its rows' ids, shape and a few sums of its values."""
    import hashlib

    X = np.asarray(X, dtype=np.float32)
    h = hashlib.sha256(np.asarray(image_ids, dtype=np.int64).tobytes())
    h.update(np.asarray(X.shape, dtype=np.int64).tobytes())
    h.update(X.sum(axis=0, dtype=np.float64).round(3).tobytes())
    h.update(X.sum(axis=1, dtype=np.float64).round(3).tobytes())
    return h.hexdigest()


def spread_graph(run_dir, network_id, image_ids, X, k=10, random_state=0):
    """The :class:`LabelSpreading` graph of a dataset's features, built once and kept beside its predictions
    (it depends on the features alone; new images or other features build it again)."""
    import scipy.sparse as sp

    from . import paths, results

    path = paths.network_dir(run_dir, network_id) / GRAPH_FILE
    model = LabelSpreading(k=k, random_state=random_state)
    key = {"fingerprint": features_fingerprint(image_ids, X), "k": int(k), "pca_dims": model.pca_dims,
           "random_state": int(random_state)}

    def build():
        G = model.build_graph(X).graph_.tocsr()
        return {"data": G.data.astype(np.float32), "indices": G.indices, "indptr": G.indptr}

    arrays = results.kept_npz(path, key, build)
    if not hasattr(model, "graph_"):  # read back, not built just now
        n = len(image_ids)
        model.graph_ = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(n, n))
    return model
