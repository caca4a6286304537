"""Graph clustering of projected images, and the paper's cluster-labelling rule.

Graphs (built in scipy/numpy, never an n x n matrix):

* ``mst``: the Euclidean minimum spanning tree of the points (the paper's default). In 2-D and 3-D it
  is computed exactly from the Delaunay triangulation, which contains it, so the tree always
  connects every image; coincident points are joined to one copy by zero-length edges. In more
  dimensions it is the spanning tree of a kNN graph whose components are then joined by their
  shortest connecting edges (Boruvka steps), so it is connected too.
* ``knn``: each image linked to its ``k`` nearest neighbours, keeping only edges not longer than
  ``threshold``; an image with no edge left is an *outlier* (cluster -1). Without a threshold, the
  99th percentile of the distances of images to their nearest neighbour is used, so about 1% of the
  images, the most isolated ones, become outliers.

Edge weights are similarities, the inverse of the distance (plus a tiny epsilon for coincident points);
modularity does not depend on their scale.

Communities: ``louvain`` (networkx's implementation, see :func:`louvain`; ``resolution`` is the usual modularity resolution gamma:
above 1 gives more and smaller clusters, below 1 fewer and larger ones; ``random_state`` makes it
reproducible) or ``girvan-newman``
(networkx; edges removed by betweenness times length, see :func:`girvan_newman`), refused above
:data:`GIRVAN_NEWMAN_MAX_NODES` images because its cost grows with the
cube of the number of images: minutes beyond that. Girvan-Newman's hierarchy is cut at the level of
highest modularity (at most ``max_clusters`` levels are explored).

The labelling rule (:func:`label_clusters`, :func:`assign_labels`), exactly:

1. A cluster's label is the most frequent expert label among its *train* images (labelled and not
   in the test split; test labels are never used). Ties go to the label more frequent among all
   train images, then to the alphabetically first. A cluster with no train image has no label and
   is flagged ``needs_label``.
2. Every image in a labelled cluster gets that cluster's label (train images included: this is what
   the paper's train metrics measure).
3. An image in a cluster without a label, or an outlier, gets the label of the *nearest labelled
   cluster*: the cluster of the nearest image (Euclidean distance in the projection) that belongs to
   a labelled cluster.

Confidence of a cluster label: the Laplace-smoothed share of the majority label among the cluster's
train images, ``(majority + 1) / (labelled + n_classes)``; so a cluster with few labelled images is
less certain than a large pure one. Under rule 3 it is further multiplied by ``1 / (1 + d / l)``,
``d`` the distance to the nearest labelled-cluster image and ``l`` the median edge length of the graph.
"""
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from .errors import MissingStep, UserError

GRAPHS = ("mst", "knn")
METHODS = ("louvain", "girvan-newman")
GIRVAN_NEWMAN_MAX_NODES = 1000


def _knn(Y, k):
    from sklearn.neighbors import NearestNeighbors

    k = min(int(k), len(Y) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(Y)
    dist, ind = nn.kneighbors(Y)
    return dist[:, 1:], ind[:, 1:]


def _sym(rows, cols, data, n):
    G = sp.coo_matrix((data, (rows, cols)), shape=(n, n)).tocsr()
    return G.maximum(G.T).tocsr()


def _unique_points(Y):
    """(unique points, index of each point's copy in them, first point of each unique copy)."""
    uniq, first, inverse = np.unique(np.round(Y, 12), axis=0, return_index=True, return_inverse=True)
    return uniq, inverse.ravel(), first


def _delaunay_edges(U):
    from scipy.spatial import Delaunay

    tri = Delaunay(U, qhull_options="Qbb Qc Qz Q12" if U.shape[1] > 2 else "Qbb Qc Qz")
    s = tri.simplices
    pairs = []
    for a in range(s.shape[1]):
        for b in range(a + 1, s.shape[1]):
            pairs.append(np.stack([s[:, a], s[:, b]], axis=1))
    e = np.concatenate(pairs).astype(np.int64)
    e.sort(axis=1)
    key = np.unique(e[:, 0] * len(U) + e[:, 1])
    return key // len(U), key % len(U)


def _connect_components(U, T):
    """Join the components of forest ``T`` by their shortest connecting edges (Boruvka steps)."""
    from sklearn.neighbors import KDTree

    n = len(U)
    T = T.tocsr()
    while True:
        n_comp, comp = connected_components(T, directed=False)
        if n_comp <= 1:
            return T
        rows, cols, data = [], [], []
        for c in range(n_comp):
            inside = np.flatnonzero(comp == c)
            outside = np.flatnonzero(comp != c)
            tree = KDTree(U[outside])
            d, j = tree.query(U[inside], k=1)
            best = int(np.argmin(d[:, 0]))
            rows.append(inside[best])
            cols.append(outside[j[best, 0]])
            data.append(max(float(d[best, 0]), 1e-12))
        extra = _sym(rows, cols, data, n)
        T = minimum_spanning_tree(T.maximum(T.T) + extra).tocsr()


def mst_graph(Y, k=10):
    """Euclidean minimum spanning tree of the rows of ``Y`` as a symmetric CSR matrix of distances.

    Always connected. Zero-length edges (coincident points) are stored as a tiny positive distance.
    """
    Y = np.asarray(Y, dtype=np.float64)
    n = len(Y)
    if n < 2:
        return sp.csr_matrix((n, n))
    U, inv, rep = _unique_points(Y)
    m = len(U)
    if m == 1:
        T = sp.csr_matrix((1, 1))
    elif U.shape[1] <= 3 and m > U.shape[1] + 1:
        try:
            r, c = _delaunay_edges(U)
            d = np.linalg.norm(U[r] - U[c], axis=1)
            T = minimum_spanning_tree(_sym(r, c, np.maximum(d, 1e-12), m))
        except Exception:  # degenerate input (all points on a line/plane): fall back to kNN + joins
            T = None
        if T is not None and connected_components(T, directed=False)[0] > 1:
            T = _connect_components(U, T)
    else:
        T = None
    if T is None:
        dist, ind = _knn(U, min(k, m - 1))
        G = _sym(np.repeat(np.arange(m), ind.shape[1]), ind.ravel(), np.maximum(dist.ravel(), 1e-12), m)
        T = _connect_components(U, minimum_spanning_tree(G))
    T = T.tocoo()
    # Back to all points: tree edges between representatives, plus each duplicate to its representative.
    order = np.arange(n)
    rows = [rep[T.row]]
    cols = [rep[T.col]]
    data = [T.data]
    dup = np.flatnonzero(rep[inv] != order)
    if len(dup):
        rows.append(dup)
        cols.append(rep[inv[dup]])
        data.append(np.full(len(dup), 1e-12))
    return _sym(np.concatenate(rows), np.concatenate(cols), np.concatenate(data), n)


def knn_graph(Y, k=15, threshold=None):
    """kNN graph of ``Y`` without edges longer than ``threshold``; returns (CSR distances, threshold used)."""
    Y = np.asarray(Y, dtype=np.float64)
    n = len(Y)
    if n < 2:
        return sp.csr_matrix((n, n)), threshold
    dist, ind = _knn(Y, k)
    if threshold is None:
        threshold = float(np.percentile(dist[:, 0], 99))
    keep = dist <= threshold
    rows = np.repeat(np.arange(n), ind.shape[1])[keep.ravel()]
    G = _sym(rows, ind.ravel()[keep.ravel()], np.maximum(dist.ravel()[keep.ravel()], 1e-12), n)
    return G, float(threshold)


def _similarity_edges(G):
    G = sp.triu(G, k=1).tocoo()
    d = G.data
    eps = 1e-3 * float(np.median(d[d > 1e-9])) if (d > 1e-9).any() else 1e-6
    return G.row, G.col, 1.0 / (np.maximum(d, 0.0) + eps)


def _nx_graph(n, rows, cols, w):
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from(zip(rows.tolist(), cols.tolist(), w.tolist()))
    return g


def modularity(rows, cols, w, labels, resolution=1.0):
    """Newman modularity of a partition of an undirected graph given by its edge list (each edge once)."""
    labels = np.asarray(labels)
    m = float(w.sum())
    if m <= 0:
        return 0.0
    k = max(int(labels.max()) + 1, 1)
    inside = labels[rows] == labels[cols]
    w_in = np.bincount(labels[rows][inside], weights=w[inside], minlength=k)
    deg = np.bincount(rows, weights=w, minlength=len(labels)) + np.bincount(cols, weights=w, minlength=len(labels))
    tot = np.bincount(labels, weights=deg, minlength=k)
    return float((w_in / m).sum() - resolution * ((tot / (2 * m)) ** 2).sum())


def louvain(G, resolution=1.0, random_state=0):
    """Louvain communities of the graph of distances ``G``: (community per node, modularity).

    ``resolution`` is the usual modularity resolution (gamma): above 1 more and smaller communities,
    below 1 fewer and larger ones. Runs networkx's Louvain implementation: python-louvain's
    ``best_partition`` stops early for gamma below 1 (its stopping test scales the wrong term of the
    modularity), so lowering the resolution gave *more* clusters there; networkx's is also faster.
    """
    import networkx as nx

    n = G.shape[0]
    rows, cols, w = _similarity_edges(G)
    if len(w) == 0:
        return np.arange(n), 0.0
    g = _nx_graph(n, rows, cols, w)
    parts = nx.community.louvain_communities(g, weight="weight", resolution=float(resolution), seed=random_state)
    labels = np.empty(n, dtype=np.int64)
    for ci, members in enumerate(parts):
        labels[list(members)] = ci
    return labels, modularity(rows, cols, w, labels, float(resolution))


def girvan_newman(G, max_clusters=50):
    """Girvan-Newman communities, cut at the modularity maximum: (community per node, modularity)."""
    import itertools

    import networkx as nx
    from networkx.algorithms.community import girvan_newman as gn
    from networkx.algorithms.community import modularity

    n = G.shape[0]
    if n > GIRVAN_NEWMAN_MAX_NODES:
        raise UserError(
            f"Girvan-Newman is too slow for {n} images (its cost grows with the cube of the number of images: "
            f"minutes above {GIRVAN_NEWMAN_MAX_NODES}). Use --method louvain.")
    rows, cols, w = _similarity_edges(G)
    g = _nx_graph(n, rows, cols, w)
    if g.number_of_edges() == 0:
        return np.arange(n), 0.0
    best, best_q = [set(c) for c in nx.connected_components(g)], -1.0
    best_q = modularity(g, best, weight="weight")

    def most_valuable_edge(graph):
        # Betweenness times length: on a tree every path is unique, so plain betweenness only measures how
        # evenly an edge splits the tree; weighting by length removes the long bridges between groups first.
        eb = nx.edge_betweenness_centrality(graph, weight=lambda u, v, d: 1.0 / d["weight"])
        return max(eb, key=lambda e: eb[e] / graph.edges[e]["weight"])

    for parts in itertools.islice(gn(g, most_valuable_edge=most_valuable_edge), max_clusters):
        q = modularity(g, parts, weight="weight")
        if q > best_q:
            best, best_q = [set(c) for c in parts], q
    labels = np.empty(n, dtype=np.int64)
    for ci, members in enumerate(sorted(best, key=min)):
        labels[list(members)] = ci
    return labels, float(best_q)


class GraphClustering:
    """Graph + community detection on projected points.

    Fitted attributes: ``graph_`` (CSR matrix of edge lengths), ``labels_`` (cluster per point,
    -1 for outliers of a thresholded kNN graph; clusters numbered by decreasing size),
    ``n_clusters_``, ``modularity_``, ``threshold_`` (kNN graph), ``edge_length_`` (median edge
    length), ``seconds_`` (graph, communities).
    """

    def __init__(self, graph="mst", k=15, threshold=None, method="louvain", resolution=1.0, random_state=0,
                 max_clusters=50):
        self.graph = graph
        self.k = k
        self.threshold = threshold
        self.method = method
        self.resolution = resolution
        self.random_state = random_state
        self.max_clusters = max_clusters

    def get_params(self):
        return {k: getattr(self, k) for k in ("graph", "k", "threshold", "method", "resolution",
                                              "random_state", "max_clusters")}

    def fit(self, Y):
        if self.graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        Y = np.asarray(Y, dtype=np.float64)
        n = len(Y)
        if n > GIRVAN_NEWMAN_MAX_NODES and self.method == "girvan-newman":
            girvan_newman(sp.csr_matrix((n, n)))  # raises the explanatory UserError before any work
        t0 = time.perf_counter()
        self.threshold_ = None
        if self.graph == "mst":
            G = mst_graph(Y, k=self.k)
        else:
            G, self.threshold_ = knn_graph(Y, k=self.k, threshold=self.threshold)
        t1 = time.perf_counter()
        self.graph_ = G
        self.edge_length_ = float(np.median(G.data)) if G.nnz else 1.0
        if self.method == "louvain":
            comm, q = louvain(G, self.resolution, self.random_state)
        else:
            comm, q = girvan_newman(G, self.max_clusters)
        degree = np.diff(G.indptr)
        comm = np.where(degree == 0, -1, comm) if n > 1 else np.zeros(n, dtype=np.int64)
        self.labels_ = _renumber_by_size(comm)
        self.n_clusters_ = int(self.labels_.max() + 1) if (self.labels_ >= 0).any() else 0
        self.modularity_ = q
        self.seconds_ = {"graph": round(t1 - t0, 3), "communities": round(time.perf_counter() - t1, 3)}
        return self

    def fit_predict(self, Y):
        return self.fit(Y).labels_


def _renumber_by_size(comm):
    comm = np.asarray(comm, dtype=np.int64)
    out = np.full(len(comm), -1, dtype=np.int64)
    valid = comm >= 0
    if not valid.any():
        return out
    ids, counts = np.unique(comm[valid], return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    remap = {int(c): i for i, c in enumerate(order)}
    out[valid] = np.array([remap[int(c)] for c in comm[valid]], dtype=np.int64)
    return out


def label_clusters(clusters, y, n_classes):
    """Rule 1: the label of each cluster from its train images.

    ``clusters``: cluster per image (-1 outlier); ``y``: class code of each image that is a train image,
    -1 for every other image. Returns a list of dicts, one per cluster id 0..max: ``label`` (class code or
    -1), ``needs_label``, ``size``, ``n_labelled``, ``counts`` (per class code), ``purity``, ``confidence``.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    n_clusters = int(clusters.max() + 1) if (clusters >= 0).any() else 0
    prior = np.bincount(y[y >= 0], minlength=n_classes) if n_classes else np.zeros(0, int)
    table = []
    sizes = np.bincount(clusters[clusters >= 0], minlength=n_clusters)
    lab = (clusters >= 0) & (y >= 0)
    counts = np.zeros((n_clusters, max(n_classes, 1)), dtype=np.int64)
    np.add.at(counts, (clusters[lab], y[lab]), 1)
    for c in range(n_clusters):
        cnt = counts[c, :n_classes]
        total = int(cnt.sum())
        if total == 0:
            table.append(dict(cluster=c, label=-1, needs_label=True, size=int(sizes[c]), n_labelled=0,
                              counts={}, purity=0.0, confidence=0.0))
            continue
        top = cnt.max()
        tied = np.flatnonzero(cnt == top)
        if len(tied) > 1:
            tied = tied[prior[tied] == prior[tied].max()]
        label = int(tied.min())
        table.append(dict(
            cluster=c, label=label, needs_label=False, size=int(sizes[c]), n_labelled=total,
            counts={int(k): int(v) for k, v in enumerate(cnt) if v},
            purity=float(top / total), confidence=float((top + 1) / (total + max(n_classes, 1)))))
    return table


def assign_labels(Y, clusters, table, edge_length=1.0):
    """Rules 2 and 3: (label code, confidence, rule used) for every image; see the module docstring.

    The rule is 2 (own cluster) or 3 (nearest labelled cluster); label -1 only when no cluster has a label.
    """
    from sklearn.neighbors import KDTree

    Y = np.asarray(Y, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=np.int64)
    n = len(Y)
    cl_label = np.array([t["label"] for t in table], dtype=np.int64)
    cl_conf = np.array([t["confidence"] for t in table], dtype=np.float64)
    pred = np.full(n, -1, dtype=np.int64)
    conf = np.zeros(n, dtype=np.float64)
    rule = np.full(n, 3, dtype=np.int8)
    own = clusters >= 0
    own_lab = np.zeros(n, dtype=bool)
    own_lab[own] = cl_label[clusters[own]] >= 0
    pred[own_lab] = cl_label[clusters[own_lab]]
    conf[own_lab] = cl_conf[clusters[own_lab]]
    rule[own_lab] = 2
    rest = np.flatnonzero(~own_lab)
    if len(rest) and own_lab.any():
        anchors = np.flatnonzero(own_lab)
        d, j = KDTree(Y[anchors]).query(Y[rest], k=1)
        nearest = anchors[j[:, 0]]
        pred[rest] = pred[nearest]
        conf[rest] = conf[nearest] / (1.0 + d[:, 0] / max(edge_length, 1e-12))
    return pred, conf, rule


def cluster_dataset(logdir, network_id, graph="mst", k=15, threshold=None, method="louvain", resolution=1.0,
                    random_state=0, on="all", max_clusters=50):
    """Cluster a stored projection, label the clusters, store the result; return a summary.

    ``on='all'`` (default) builds the graph over every projected image, so clusters also group the
    unlabelled images the expert may label in bulk; ``on='train'`` builds it over the train images
    only (the paper's setting) and every other image goes by rule 3.
    """
    from . import results

    arrays, pmeta = results.load_result(logdir, network_id, "projection")
    image_ids, Y = arrays["image_ids"], arrays["coords"]
    inp = results.load_inputs(logdir, network_id, features=False)
    rows = results.align(inp.image_ids, image_ids)
    if (rows < 0).any():
        raise UserError(f"The projection of {network_id!r} lists images that are no longer in the dataset: "
                        f"run `nipgboard project {logdir} --network {network_id}` again.")
    labels, roles = inp.labels[rows], inp.roles[rows]
    classes = sorted({str(v) for v in labels[roles == "train"]})
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] if role == "train" else -1 for lab, role in zip(labels, roles)], dtype=np.int64)
    if on not in ("all", "train"):
        raise UserError("--on must be 'all' or 'train'")
    members = np.ones(len(Y), bool) if on == "all" else roles == "train"
    if members.sum() < 2:
        raise UserError(f"Too few images to cluster ({int(members.sum())}); with --on train, label more images.")
    est = GraphClustering(graph=graph, k=k, threshold=threshold, method=method, resolution=resolution,
                          random_state=random_state, max_clusters=max_clusters)
    try:
        est.fit(Y[members])
    except ValueError as exc:
        raise UserError(str(exc)) from None
    clusters = np.full(len(Y), -1, dtype=np.int64)
    clusters[members] = est.labels_
    table = label_clusters(clusters, y, len(classes))
    pred, conf, rule = assign_labels(Y, clusters, table, est.edge_length_)
    for t in table:
        t["label"] = classes[t["label"]] if t["label"] >= 0 else None
        t["counts"] = {classes[k]: v for k, v in t["counts"].items()}
    meta = {
        "params": est.get_params() | {"on": on, "threshold_used": est.threshold_},
        "classes": classes,
        "clusters": table,
        "n_clusters": est.n_clusters_,
        "modularity": est.modularity_,
        "edge_length": est.edge_length_,
        "projection_token": pmeta["token"],
        "seconds": est.seconds_,
        "created_at": time.time(),
    }
    results.save_result(logdir, network_id, "clusters", {
        "image_ids": image_ids, "cluster": clusters, "pred": pred, "confidence": conf.astype(np.float32),
        "rule": rule}, meta)
    n_out = int((clusters < 0).sum()) if on == "all" else int(((clusters < 0) & members).sum())
    return {
        "network": network_id, "graph": graph, "method": method, "resolution": resolution, "on": on,
        "images": int(len(Y)), "clusters": est.n_clusters_,
        "needs_label": int(sum(t["needs_label"] for t in table)),
        "outliers": n_out, "threshold": est.threshold_, "modularity": round(est.modularity_, 4),
        "seconds": est.seconds_, "table": table,
    }


def load_clusters(logdir, network_id, check_projection=True):
    """(arrays, meta) of the stored clusters; refuses clusters made from an older projection."""
    from . import results

    arrays, meta = results.load_result(logdir, network_id, "clusters")
    if check_projection:
        _, pmeta = results.load_result(logdir, network_id, "projection")
        if pmeta["token"] != meta.get("projection_token"):
            raise MissingStep(f"The clusters of {network_id!r} were made from an older projection: run "
                            f"`nipgboard cluster {logdir} --network {network_id}` again.")
    return arrays, meta


def load_clusters_if_current(logdir, network_id, notes):
    """(arrays, meta) of the stored clusters, or (None, None) with the reason appended to ``notes``
    when there are none or they were made from an older projection."""
    from . import results

    if not results.has_result(logdir, network_id, "clusters"):
        return None, None
    try:
        return load_clusters(logdir, network_id)
    except UserError as exc:
        notes.append(str(exc))
        return None, None
