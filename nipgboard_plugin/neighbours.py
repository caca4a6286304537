"""Near duplicates, similar images and rare images, from a network's features.

Distance: Euclidean distance between L2-normalised feature vectors, so it lies in
[0, 2] on every network whatever its feature scale (d = sqrt(2 - 2 cos)). A
threshold of 0.3 means cosine similarity above 0.955, 0.6 above 0.82, 1.0 above
0.5. The paper's thresholds (0.3 / 0.6 / 1.0 on raw VGG19 features of images
scaled by 1/255) therefore keep their rough meaning: from "the same picture
shifted by a few pixels" to "the same object, visibly different".

Nothing here builds an n x n matrix, so memory stays bounded: rarity runs brute
force in row blocks (scikit-learn's chunked pairwise distances), and the
near-duplicate search keeps one root per row instead of the pairs it links.
"""
import numpy as np
import sklearn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import threadpool_limits

# scikit-learn's chunked distance computations stay within this many MiB per block.
WORKING_MEMORY_MB = 256


def normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def _index(Xn, **kw):
    return NearestNeighbors(algorithm="brute", metric="euclidean", **kw).fit(Xn)


# The near-duplicate search takes rows in blocks of BLOCK_ROWS against the later rows, in column
# chunks of COLUMNS_PER_BLOCK_ROW times that: a 512 x 8192 tile of projected distances is 16 MiB.
BLOCK_ROWS = 512
COLUMNS_PER_BLOCK_ROW = 16
PROJECTION_DIMS = 256
TILE_DIMS = 128             # leading coordinates that tiles are compared in
PROJECTION_SAMPLE = 5000
# Candidates lie within threshold^2 + PROJECTED_SLACK in the projection: the float32 rounding of
# squared distances there (at most 258 terms of coordinates below 2) stays under 3e-4, so
# rounding never drops a true pair.
PROJECTED_SLACK = 1e-3
# Candidates are confirmed in batches, each folded into the forest before the next is filtered:
# once a few pairs have joined two clusters, their other pairs need no confirming.
VERIFY_BATCH = 32768
# Confirm a batch with one product of the rows it involves when that product has at most this many
# cells per pair; otherwise pair by pair.
DENSE_CELLS_PER_PAIR = 64
PAIR_SLICE = 4096           # pairs gathered at a time otherwise


def near_duplicate_groups(X, threshold, progress=None, should_stop=None, block_rows=BLOCK_ROWS):
    """Groups (lists of row indices, each of 2 or more) linked by distance <= threshold.

    Linking is transitive (single linkage): A~B and B~C put A, B, C in one group.
    Groups are sorted by size, then by their first member.

    Exact, in memory bounded whatever the threshold: rows are compared block by block with the rows
    after them; candidate pairs come from a PCA projection (a projection never lengthens a distance,
    so no true pair is missed) and are confirmed on the full vectors; what is linked so far is kept
    as one root per row, never as edges. ``progress(done_rows, total_rows)`` is called after each
    block of ``block_rows`` rows; when ``should_stop()`` returns True the search ends there and the
    function returns None.
    """
    Xn = normalise(X)
    n = len(Xn)
    if n < 2:
        if progress:
            progress(n, n)
        return []
    Z, order = _sorted_projection(Xn)
    search = _PairSearch(Xn, order, Z, float(threshold))
    forest = _Forest(n)
    block_rows = max(1, int(block_rows))
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        search.link_block(start, stop, forest, block_rows * COLUMNS_PER_BLOCK_ROW)
        if progress:
            progress(stop, n)
        if stop < n and should_stop and should_stop():
            return None
    # The forest works on positions in the sorted order; groups name the caller's rows.
    root = np.empty(n, dtype=np.int64)
    root[order] = forest.root
    return _groups(root)


def _sorted_projection(Xn):
    """PCA coordinates (float32) of the rows sorted by their first one, and that order.

    Centring changes no difference between rows, so these are distances under an orthogonal
    projection: never longer than in the full space. Sorted by the first coordinate, a block need
    not look at rows whose first coordinate alone is already too far.
    """
    n, d = Xn.shape
    if n > PROJECTION_SAMPLE:
        sample = Xn[np.random.default_rng(0).choice(n, PROJECTION_SAMPLE, replace=False)]
    else:
        sample = Xn
    sample = sample.astype(np.float64)
    mean = sample.mean(axis=0)
    k = max(1, min(PROJECTION_DIMS, d, len(sample)))
    # Factorisations this small run fastest on one thread, and threads waiting on busy cores
    # can make them 10 times slower.
    with threadpool_limits(limits=1, user_api="blas"):
        _, _, vt = randomized_svd(sample - mean, k, n_iter=2, random_state=0)
        # Any orthonormal basis keeps the bound; QR makes it orthonormal to float64 precision.
        basis, _ = np.linalg.qr(vt.T)
    Z = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, 4096):
        Z[s:s + 4096] = (Xn[s:s + 4096].astype(np.float64) - mean) @ basis
    order = np.argsort(Z[:, 0], kind="stable")
    return Z[order], order


class _PairSearch:
    """Links the pairs within the threshold, one block of rows at a time (positions in sorted order).

    Each pair passes three tests, each a lower bound of the next: the distance in the leading
    TILE_DIMS coordinates (one product per tile), in all the projection's coordinates, and on the
    full vectors. Only what passes one reaches the costlier next one.
    """

    def __init__(self, Xn, order, Z, threshold):
        self.Xn, self.order, self.Z, self.threshold = Xn, order, Z, threshold
        self.radius2 = threshold * threshold + PROJECTED_SLACK
        self.first = Z[:, 0]
        # [z, |z|^2, 1] . [-2z, 1, |z|^2] = |zi - zj|^2: one float32 product gives a tile's distances.
        lead = Z[:, :TILE_DIMS]
        sq = np.einsum("ij,ij->i", lead, lead)[:, None]
        ones = np.ones_like(sq)
        self.left = np.hstack([lead, sq, ones])
        self.right = np.hstack([-2 * lead, ones, sq])
        self.z_norms2 = np.einsum("ij,ij->i", Z, Z, dtype=np.float64)
        self.x_norms2 = np.einsum("ij,ij->i", Xn, Xn, dtype=np.float64)
        # A float32 product of unit vectors of d terms rounds by at most about d * 2^-24: full-space
        # squared distances within twice that of threshold^2, and as much again to spare, are
        # decided again in float64.
        self.verify_slack = 4 * Xn.shape[1] * 2.0 ** -24

    def link_block(self, start, stop, forest, column_chunk):
        """Link every pair (i, j), start <= i < stop, i < j, within the threshold."""
        reach = float(self.first[stop - 1]) + np.sqrt(self.radius2) + 1e-6
        end = int(np.searchsorted(self.first, reach, side="right"))
        for c0 in range(start, end, column_chunk):
            c1 = min(end, c0 + column_chunk)
            if forest.all_linked(start, stop, c0, c1):
                continue
            rows, cols = self._candidates(start, stop, c0, c1, forest.root)
            for s in range(0, len(rows), VERIFY_BATCH):
                r, c = forest.unlinked(rows[s:s + VERIFY_BATCH], cols[s:s + VERIFY_BATCH])
                if len(r):
                    forest.link(*self._confirmed(r, c))

    def _candidates(self, r0, r1, c0, c1, root):
        """Pairs of the tile within the radius in the leading coordinates, i < j, not yet linked."""
        d2 = self.left[r0:r1] @ self.right[c0:c1].T
        wanted = d2 <= self.radius2
        wanted &= root[r0:r1, None] != root[None, c0:c1]
        rows, cols = np.nonzero(wanted)
        rows += r0
        cols += c0
        later = cols > rows
        return rows[later], cols[later]

    def _confirmed(self, rows, cols):
        """The pairs that lie within the threshold on the full vectors."""
        d2 = _squared_distances(self.Z, self.z_norms2, rows, cols)
        near = d2 <= self.radius2
        rows, cols = rows[near], cols[near]
        a, b = self.order[rows], self.order[cols]
        d2 = _squared_distances(self.Xn, self.x_norms2, a, b)
        t2 = self.threshold * self.threshold
        keep = d2 <= t2
        # Near the threshold float32 products may round either way: decide those in float64.
        close = np.flatnonzero(np.abs(d2 - t2) <= self.verify_slack)
        if len(close):
            diff = self.Xn[a[close]].astype(np.float64) - self.Xn[b[close]]
            keep[close] = np.sqrt(np.einsum("ij,ij->i", diff, diff)) <= self.threshold
        return rows[keep], cols[keep]


def _squared_distances(V, norms2, a, b):
    """|V[a[k]] - V[b[k]]|^2 from float32 products: one product of the rows involved when the pairs
    are dense among them, otherwise pair by pair in bounded slices."""
    if not len(a):
        return np.empty(0, dtype=np.float64)
    a_used, a_at = _compact(a)
    b_used, b_at = _compact(b)
    if len(a_used) * len(b_used) <= DENSE_CELLS_PER_PAIR * len(a):
        dots = (V[a_used] @ V[b_used].T)[a_at, b_at]
    else:
        dots = np.empty(len(a), dtype=np.float32)
        for s in range(0, len(a), PAIR_SLICE):
            dots[s:s + PAIR_SLICE] = np.einsum("ij,ij->i", V[a[s:s + PAIR_SLICE]], V[b[s:s + PAIR_SLICE]])
    return norms2[a] + norms2[b] - 2.0 * dots


def _compact(values):
    """The distinct values (sorted) and where each input value sits among them, in linear time."""
    lo = values.min()
    present = np.zeros(values.max() - lo + 1, dtype=bool)
    present[values - lo] = True
    position = np.cumsum(present) - 1
    return np.flatnonzero(present) + lo, position[values - lo]


class _Forest:
    """What is linked so far: each row's root, the smallest row of its component."""

    def __init__(self, n):
        self.root = np.arange(n, dtype=np.int64)

    def all_linked(self, r0, r1, c0, c1):
        """Whether rows r0:r1 and c0:c1 all lie in one component already."""
        rows, cols = self.root[r0:r1], self.root[c0:c1]
        return rows.min() == rows.max() == cols.min() == cols.max()

    def unlinked(self, rows, cols):
        fresh = self.root[rows] != self.root[cols]
        return rows[fresh], cols[fresh]

    def link(self, rows, cols):
        """Join the components of each pair; work in proportion to the pairs, plus one pass over the roots."""
        if not len(rows):
            return
        m = len(rows)
        roots, at = np.unique(np.concatenate([self.root[rows], self.root[cols]]), return_inverse=True)
        graph = coo_matrix((np.ones(m, dtype=np.int8), (at[:m], at[m:])), shape=(len(roots), len(roots)))
        _, comp = connected_components(graph, directed=False)
        # Roots are sorted, so a component's first root is its smallest row.
        _, first = np.unique(comp, return_index=True)
        remap = np.arange(len(self.root), dtype=np.int64)
        remap[roots] = roots[first[comp]]
        self.root = remap[self.root]


def _groups(root):
    """Rows sharing a root, in groups of 2 or more: largest first, then by first member."""
    order = np.argsort(root, kind="stable")
    bounds = np.flatnonzero(np.diff(root[order])) + 1
    groups = [g.tolist() for g in np.split(order, bounds) if len(g) >= 2]
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
