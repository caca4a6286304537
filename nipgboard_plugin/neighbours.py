"""Near duplicates, similar images and rare images, from a network's features.

Distance: Euclidean distance between L2-normalised feature vectors, so it lies in
[0, 2] on every network whatever its feature scale (d = sqrt(2 - 2 cos)). A
threshold of 0.3 means cosine similarity above 0.955, 0.6 above 0.82, 1.0 above
0.5. The paper's thresholds (0.3 / 0.6 / 1.0 on raw VGG19 features of images
scaled by 1/255) therefore keep their rough meaning: from "the same picture
shifted by a few pixels" to "the same object, visibly different".

Nothing here builds an n x n matrix: neighbour searches run brute force in row
blocks (scikit-learn's chunked pairwise distances), so memory stays bounded.
"""
import numpy as np
import sklearn
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors

# scikit-learn's chunked distance computations stay within this many MiB per block.
WORKING_MEMORY_MB = 256


def normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def _index(Xn, **kw):
    return NearestNeighbors(algorithm="brute", metric="euclidean", **kw).fit(Xn)


def near_duplicate_groups(X, threshold):
    """Groups (lists of row indices, each of 2 or more) linked by distance <= threshold.

    Linking is transitive (single linkage): A~B and B~C put A, B, C in one group.
    Groups are sorted by size, then by their first member.
    """
    Xn = normalise(X)
    with sklearn.config_context(working_memory=WORKING_MEMORY_MB):
        graph = _index(Xn).radius_neighbors_graph(Xn, radius=float(threshold), mode="connectivity")
    n_comp, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=n_comp)
    groups = [np.flatnonzero(comp == c).tolist() for c in np.flatnonzero(sizes >= 2)]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def most_similar(X, query_row, k=10):
    """The k rows nearest to row ``query_row`` (itself excluded): (rows, distances), nearest first."""
    Xn = normalise(X)
    d2 = np.maximum(2.0 - 2.0 * (Xn @ Xn[query_row]), 0.0)
    d2[query_row] = np.inf
    k = min(int(k), len(Xn) - 1)
    if k <= 0:
        return np.array([], dtype=np.int64), np.array([], dtype=np.float32)
    top = np.argpartition(d2, k - 1)[:k]
    top = top[np.argsort(d2[top], kind="stable")]
    return top, np.sqrt(d2[top]).astype(np.float32)


def rarity(X, k=10):
    """Per row, the mean distance to its k nearest other rows: high means rare (few look like it)."""
    Xn = normalise(X)
    k = min(int(k), len(Xn) - 1)
    if k <= 0:
        return np.zeros(len(Xn), dtype=np.float32)
    with sklearn.config_context(working_memory=WORKING_MEMORY_MB):
        dist, _ = _index(Xn, n_neighbors=k + 1).kneighbors(Xn)
    # Column 0 is normally the point itself; exact duplicates may swap places, the sum is the same.
    return dist[:, 1:].mean(axis=1).astype(np.float32)


def rarest(X, n=20, k=10):
    """The n rows with the highest rarity: (rows, scores), rarest first."""
    scores = rarity(X, k)
    order = np.argsort(-scores, kind="stable")[: int(n)]
    return order, scores[order]
