"""One dataset run as a service: what the CLI and the routes ask of a dataset, in one place.

``Run(run_dir)`` answers summary, metadata, points, clusters, similar images, near duplicates, label
changes, label history and exports. Faces parse their input, call one method and answer with its
result; none of them touches SQL or result files. Steps that take long run through the registry
(:mod:`.steps`) instead, as jobs or CLI commands.
"""
import threading
from pathlib import Path

import numpy as np

from . import paths
from .errors import Conflict, MissingStep, NotFound
from .store import Store

# The normalised features of the last (run, network) asked for, kept while the cache is unchanged:
# the features of 75k images are hundreds of MB, so one entry only.
_features_lock = threading.Lock()
_features_cache = {}


class Run:
    """A dataset run (a folder holding ``nipgboard/dataset.sqlite``)."""

    def __init__(self, run_dir, name=None):
        self.dir = Path(run_dir)
        self.name = name
        if not paths.is_dataset(self.dir):
            raise MissingStep(f"No NIPGBoard dataset in {self.dir}: run `nipgboard init {self.dir} --images DIR` "
                              "first.")

    def store(self) -> Store:
        return Store(self.dir)

    # -- the dataset ---------------------------------------------------------------------------------
    def summary(self) -> dict:
        with self.store() as store:
            return store.summary()

    def counts(self) -> dict:
        with self.store() as store:
            return {"images": store.image_count(), "labelled": store.label_count()}

    def entries(self, store, ids, **columns) -> list:
        """{id, path, split} per image id, with extra per-image ``columns`` (lists in the same order)."""
        info = store.image_info(ids)
        out = []
        for n, image_id in enumerate(ids):
            path, split = info[int(image_id)]
            entry = {"id": int(image_id), "path": path, "split": split}
            entry.update({k: v[n] for k, v in columns.items()})
            out.append(entry)
        return out

    def image_id(self, image=None, image_id=None) -> int:
        """The id of an image given by path (relative to the images folder) or id; NotFound otherwise."""
        with self.store() as store:
            if image is not None:
                found = store.image_id_for_path(image)
                if found is None:
                    raise NotFound(f"{image} is not an image of this dataset")
                return found
            if store.image_by_id(int(image_id)) is None:
                raise NotFound(f"unknown image id {image_id}")
            return int(image_id)

    def metadata(self, network=None) -> dict:
        """Per-image columns in id order; with a network, its clusters and predictions where they exist."""
        with self.store() as store:
            rows = store.image_rows("id, path, split, width, height")
            labels = store.labels()
        ids = [r[0] for r in rows]
        out = {"run": self.name, "count": len(rows), "ids": ids, "paths": [r[1] for r in rows],
               "split": [r[2] for r in rows], "width": [r[3] for r in rows], "height": [r[4] for r in rows],
               "label": [labels.get(i) for i in ids]}
        if network is not None:
            from . import results

            out["network"] = network
            out.update(results.result_columns(self.dir, network, np.asarray(ids, dtype=np.int64)))
        return out

    # -- results -------------------------------------------------------------------------------------
    def points(self, network):
        """(float32 coordinates in id order, NaN where not projected; the projection's token)."""
        from . import results

        if not results.has_result(self.dir, network, "projection"):
            raise MissingStep(f"no projection for network {network!r} yet: start a 'project' job")
        arrays, meta = results.load_result(self.dir, network, "projection")
        with self.store() as store:
            ids = np.asarray([r[0] for r in store.image_rows("id")], dtype=np.int64)
        coords = np.asarray(arrays["coords"], dtype=np.float32)
        rows = results.align(arrays["image_ids"], ids)
        out = np.full((len(ids), coords.shape[1]), np.nan, dtype=np.float32)
        out[rows >= 0] = coords[rows[rows >= 0]]
        return out, meta.get("token", "")

    def clusters(self, network) -> dict:
        from . import graph, results

        if not results.has_result(self.dir, network, "clusters"):
            raise MissingStep(f"no clusters for network {network!r} yet: start a 'cluster' job")
        arrays, meta = graph.load_clusters(self.dir, network)
        sizes = np.bincount(arrays["cluster"][arrays["cluster"] >= 0]) if len(arrays["cluster"]) else []
        return dict(meta, network=network, sizes=sizes)

    def accuracy(self, network) -> dict:
        """The estimated accuracy of the labels after each prediction (see :mod:`.estimate`)."""
        from . import estimate

        return dict(estimate.answer(self.dir, network), run=self.name)

    # -- features and neighbours ---------------------------------------------------------------------
    def features(self, network):
        """(ids, L2-normalised features), kept in memory while the cache holds the same vectors."""
        from . import backbones, features, neighbours

        with self.store() as store:
            stamp = store.images_stamp()
        stamp += (features.cached_count(self.dir, backbones.get(network).cache_key()),)
        key = (str(self.dir), network)
        with _features_lock:  # one load at a time: concurrent requests wait for it rather than repeat it
            hit = _features_cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1], hit[2]
            _features_cache.clear()
            ids, X = features.load_features(self.dir, network)
            Xn = neighbours.normalise(X)
            _features_cache[key] = (stamp, ids, Xn)
        return ids, Xn

    def similar(self, network, image_id, k) -> dict:
        from .neighbours import most_similar

        ids, Xn = self.features(network)
        hit = np.flatnonzero(ids == int(image_id))
        if len(hit) == 0:
            raise NotFound(f"unknown image id {image_id}")
        rows, dist = most_similar(Xn, int(hit[0]), k)
        with self.store() as store:
            query = self.entries(store, [int(image_id)])[0]
            similar = self.entries(store, [int(ids[r]) for r in rows],
                                   distance=[round(float(d), 5) for d in dist])
        return {"network": network, "id": int(image_id), "k": k, "query": query, "similar": similar}

    def duplicates(self, network, threshold, progress=None, should_stop=None) -> dict:
        from .neighbours import near_duplicate_groups

        ids, Xn = self.features(network)
        groups = near_duplicate_groups(Xn, threshold, progress=progress, should_stop=should_stop)
        if groups is None:
            return None
        with self.store() as store:
            out = [self.entries(store, [int(ids[r]) for r in g]) for g in groups]
        return {"network": network, "threshold": threshold, "distance": "euclidean, L2-normalised features",
                "groups": out, "images_in_groups": sum(len(g) for g in out)}

    def rare(self, network, n, k) -> dict:
        from .neighbours import rarest

        ids, Xn = self.features(network)
        rows, scores = rarest(Xn, n=n, k=k)
        with self.store() as store:
            rare = self.entries(store, [int(ids[r]) for r in rows], rarity=[round(float(s), 5) for s in scores])
        return {"network": network, "k": k, "rare": rare}

    # -- labels --------------------------------------------------------------------------------------
    def set_labels(self, pairs, report=False) -> dict:
        """Save expert labels [(image id, label or None)]; the previous labels are read in the same
        transaction as the change. With ``report``, each network's agreement with the expert."""
        with self.store() as store:
            try:
                changed, previous = store.set_labels_with_previous(pairs, source="user")
            except KeyError as exc:
                raise NotFound(str(exc.args[0]) if exc.args else "unknown image id") from None
            now = store.labels_of([i for i, _ in pairs])
            user_labels = store.user_labels() if report else None
        answer = {"run": self.name, "changed": changed, "requested": len(pairs),
                  "labels": {str(i): now.get(i) for i, _ in pairs},
                  "previous": {str(i): previous.get(i) for i, _ in pairs[:1000]}}
        if report:
            from . import review

            answer["after_review"] = review.review_metrics(
                self.dir, {i: lab for i, lab in pairs if lab is not None}, user_labels)
        return answer

    def cluster_members(self, network, cluster, overwrite=False) -> list:
        """The image ids a label given to a whole cluster goes to: its members without a label, or every
        member with ``overwrite``. The one rule for the CLI, the panel and the API."""
        from . import graph

        arrays, meta = graph.load_clusters(self.dir, network)  # MissingStep names the command to run first
        members = [int(i) for i in arrays["image_ids"][arrays["cluster"] == int(cluster)]]
        if not members:
            raise NotFound(f"Network {network!r} has no cluster {cluster} "
                           f"(clusters 0..{meta['n_clusters'] - 1}).")
        if overwrite:
            return members
        with self.store() as store:
            labelled = store.labels_of(members)
        todo = [i for i in members if i not in labelled]
        if not todo:
            raise Conflict(f"every image of cluster {cluster} has a label already; give overwrite to relabel "
                           "them all")
        return todo

    def label_history(self, image_id, limit) -> dict:
        with self.store() as store:
            if image_id is not None and store.image_by_id(image_id) is None:
                raise NotFound(f"unknown image id {image_id}")
            return {"run": self.name, "history": store.label_history(image_id, limit=limit)}

    # -- pictures ------------------------------------------------------------------------------------
    def thumbnail(self, image_id, size) -> bytes:
        from . import thumbnails

        with self.store() as store:
            return thumbnails.thumbnail(self.dir, store, image_id, size)

    def full_image(self, image_id):
        """(bytes, content type) of the image at full resolution."""
        from . import thumbnails

        with self.store() as store:
            return thumbnails.full_image(store, image_id)

    def sprite_index(self, tile) -> dict:
        from . import thumbnails

        with self.store() as store:
            return thumbnails.sprite_index(self.dir, store, tile)

    def sprite_page(self, tile, page) -> bytes:
        from . import thumbnails

        with self.store() as store:
            return thumbnails.sprite_page(self.dir, store, tile, page)

    # -- export --------------------------------------------------------------------------------------
    def export_bytes(self, networks, low_confidence) -> bytes:
        """The labels CSV, written inside the run's data folder (never elsewhere), read back and removed."""
        import uuid

        from . import export

        out = paths.exports_dir(self.dir) / f".labels-{uuid.uuid4().hex}.csv"
        try:
            export.export_csv(self.dir, out, networks=networks, low_confidence=low_confidence)
            return out.read_bytes()
        finally:
            out.unlink(missing_ok=True)

