"""The TensorBoard plugin: routes under ``/data/plugin/nipgboard/``, nothing else.

Each route parses and validates its parameters (see :mod:`.web`), calls the library and serialises
the answer. Long work (ingest, feature extraction, projection, clustering, ...) is a job run by the
worker process of :mod:`.jobs`; routes only submit, report and cancel jobs, so the server stays
responsive while a job runs.

GET routes (query parameters; ``run`` is always a name from ``/runs``; errors are ``{"error", "status"}``
with 400 bad parameter, 403 refused, 404 unknown run/image/job/network, 405 wrong method, 409 an earlier
step is missing (e.g. no projection yet: the message says which job to start), 413 body too large,
415 body not JSON):

==================  ==========================================  ============================================
route               parameters                                  answer
==================  ==========================================  ============================================
/index.js           -                                           the frontend module (exports ``render()``)
/index.html         -                                           the same frontend as a standalone page
/static/<file>      -                                           the frontend's other files
/runs               -                                           runs, counts, active jobs, worker state;
                                                                ``onboarding`` text when there is no run
/summary            run                                         dataset summary (counts, unreadable files
                                                                with reasons, exact duplicates, classes)
/networks           [run]                                       networks, availability (and why not),
                                                                ``cached``: images with features
/kinds              -                                           job kinds and whether they can run here
/jobs               [run] [limit=50] [active=false]             jobs, newest first, and the worker state
/job                run, id                                     one job: state, stage, done/total,
                                                                fraction, rate (/s), eta (s), result, error
/metadata           run [network]                               per-image columns in id order: ids, paths,
                                                                split, width, height, label; with network:
                                                                cluster, cluster_label, predicted, confidence
/points             run, network                                float32 little-endian coordinates, id order
                                                                (NaN: not projected); headers
                                                                X-NIPGBoard-Count, -Dims, -Token
/clusters           run, network                                cluster table, parameters, sizes
/metrics            run [networks=a,b] [positive]               metrics table (train/test per network)
/review             run [networks=a,b] [limit=500]              the review queue, most doubtful first
                    [low_confidence=0.6] [include_labelled]
                    [all]
/label_history      run [id] [limit=1000]                       label changes, oldest first
/export             run [networks=a,b] [low_confidence]         CSV: path, role, expert label, predicted,
                                                                confidence, final label, clusters, votes,
                                                                flagged
/sprite_index       run [tile=64]                               atlas pages (first, count, columns, rows,
                                                                width, height, ready), id order
/sprite             run, page [tile=64]                         one atlas page (JPEG); 409 when too large
                                                                to draw now: start a ``sprites`` job
/thumbnail          run, id [size=128]                          thumbnail (JPEG, fits size x size)
/image              run, id                                     the full image (the file, or PNG when
                                                                browsers cannot show its format)
/similar            run, network, id [k=10]                     most similar images, with distances
/duplicates         run, network [threshold=0.3]                near-duplicate groups (image ids)
==================  ==========================================  ============================================

POST routes (JSON object body, header ``X-NIPGBoard: 1``, same-origin; 1 MiB at most, 8 MiB for labels):

==================  ==========================================  ============================================
/start_job          run, kind, params {...}                     202 + the queued job (see ``jobs.KINDS``
                                                                for each kind's parameters); ``ingest``
                                                                may name a new run
/cancel_job         run, id                                     the job (cancelled, or stopping)
/set_labels         run, label (string; null removes) and one   changed, requested, labels now, previous
                    of: id | ids [..] | assignments [[id,       labels; with ``report``: each network's
                    label], ..] (no label) | cluster {network,  agreement with the expert
                    cluster[, overwrite]}; [report]
==================  ==========================================  ============================================
"""
import logging
import mimetypes
import os
import threading
import uuid
from pathlib import Path

import numpy as np
from tensorboard.plugins import base_plugin

from . import __version__, jobs, paths, thumbnails, web
from .errors import UserError
from .runs import RunIndex
from .store import Store
from .web import (LABELS_MAX_BODY, REQUIRED, BadRequest, Conflict, NotFound, binary_response, check_keys,
                  clean_id, clean_label, json_response, p_bool, p_float, p_id_list, p_int, p_str, route)

logger = logging.getLogger("nipgboard")

PLUGIN_NAME = "nipgboard"
STATIC_DIR = Path(__file__).resolve().parent / "static"
FALLBACK_FRONTEND = "minimal"          # static/minimal/: the plain page used until a frontend bundle is built
STATIC_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
                ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
                ".png": "image/png", ".jpg": "image/jpeg", ".wasm": "application/wasm", ".txt": "text/plain"}


def _preload():
    try:
        from . import backbones, features, neighbours  # noqa: F401
    except Exception:  # noqa: BLE001 - the routes report import problems themselves
        logger.debug("nipgboard: preloading failed", exc_info=True)


class NipgboardLoader(base_plugin.TBLoader):
    """Entry point of the ``tensorboard_plugins`` group."""

    def load(self, context):
        return NipgboardPlugin(context)


class NipgboardPlugin(base_plugin.TBPlugin):
    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        self.context = context
        web.allow_hosts(getattr(getattr(context, "flags", None), "host", None))
        self.runs = RunIndex(getattr(context, "logdir", None))
        self.jobs = jobs.JobManager(self.runs)
        self.jobs.start()  # re-queues interrupted jobs and, with datasets present, starts (and warms) the worker
        self._features_cache = {}
        self._features_lock = threading.Lock()
        # Import what the neighbour and network routes need (scikit-learn, the network registry) now,
        # in the background, rather than in the first request that needs them.
        threading.Thread(target=_preload, name="nipgboard-preload", daemon=True).start()

    # -- TensorBoard interface ------------------------------------------------------------------------
    def get_plugin_apps(self):
        return {
            "/index.js": self._serve_index_js,
            "/index.html": self._serve_index_html,
            "/static/*": self._serve_static,
            "/runs": self._serve_runs,
            "/summary": self._serve_summary,
            "/networks": self._serve_networks,
            "/kinds": self._serve_kinds,
            "/jobs": self._serve_jobs,
            "/job": self._serve_job,
            "/start_job": self._start_job,
            "/cancel_job": self._cancel_job,
            "/metadata": self._serve_metadata,
            "/points": self._serve_points,
            "/clusters": self._serve_clusters,
            "/metrics": self._serve_metrics,
            "/review": self._serve_review,
            "/set_labels": self._set_labels,
            "/label_history": self._serve_label_history,
            "/export": self._serve_export,
            "/sprite_index": self._serve_sprite_index,
            "/sprite": self._serve_sprite,
            "/thumbnail": self._serve_thumbnail,
            "/image": self._serve_image,
            "/similar": self._serve_similar,
            "/duplicates": self._serve_duplicates,
        }

    def is_active(self):
        return bool(self.runs.runs())

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="NIPGBoard")

    # -- helpers ------------------------------------------------------------------------------------------
    def _dataset(self, params):
        """(run name, run dir) of the dataset named by ``run``."""
        name = p_str(params, "run", max_len=1000)
        return name, self.runs.dataset_dir(name)

    def _network_param(self, params, name="network"):
        value = p_str(params, name, max_len=100, pattern=r"[A-Za-z0-9_.\-]+")
        from . import backbones
        try:
            backbones.get(value)
        except KeyError:
            raise NotFound(f"unknown network {value!r}") from None
        return value

    def _features(self, run_dir, network):
        """(ids, L2-normalised features) of a run, cached while the feature cache is unchanged."""
        from . import features, neighbours

        # Valid while the dataset's images and this network's cached vectors are the same set.
        with Store(run_dir) as store:
            stamp = store.conn.execute("SELECT COUNT(*), MAX(id) FROM images").fetchone()
        from . import backbones
        cache = features.open_cache(run_dir)
        try:
            stamp += cache.execute("SELECT COUNT(*) FROM features WHERE key=?",
                                   (backbones.get(network).cache_key(),)).fetchone()
        finally:
            cache.close()
        key = (str(run_dir), network)
        with self._features_lock:  # one load at a time: concurrent requests wait for it, not repeat it
            hit = self._features_cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1], hit[2]
            self._features_cache.clear()  # one entry: the features of 75k images are hundreds of MB
            try:
                ids, X = features.load_features(run_dir, network)
            except features.FeaturesMissing as exc:
                raise Conflict(str(exc)) from None
            Xn = neighbours.normalise(X)
            self._features_cache[key] = (stamp, ids, Xn)
        return ids, Xn

    # -- frontend ----------------------------------------------------------------------------------------
    def _static_file(self, rel):
        """The file ``rel`` (a '/'-separated name) of the static folder, only if it is listed there."""
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise NotFound("not found")
        parts = rel.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise NotFound("not found")
        folder = STATIC_DIR
        for part in parts[:-1]:
            if part not in os.listdir(folder) or not (folder / part).is_dir() or (folder / part).is_symlink():
                raise NotFound("not found")
            folder = folder / part
        if parts[-1] not in os.listdir(folder):
            raise NotFound("not found")
        path = folder / parts[-1]
        if not path.is_file() or path.is_symlink():
            raise NotFound("not found")
        return path

    def _respond_static(self, request, path):
        ctype = STATIC_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return binary_response(request, path.read_bytes(), ctype)

    @route()
    def _serve_index_js(self, request, params):
        bundle = STATIC_DIR / "index.js"
        if not bundle.is_file():
            bundle = STATIC_DIR / FALLBACK_FRONTEND / "index.js"
        return self._respond_static(request, bundle)

    @route()
    def _serve_index_html(self, request, params):
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            page = STATIC_DIR / FALLBACK_FRONTEND / "index.html"
        return self._respond_static(request, page)

    @route()
    def _serve_static(self, request, params):
        prefix = f"/data/plugin/{PLUGIN_NAME}/static/"
        path = request.path
        idx = path.find(prefix)
        if idx < 0:
            raise NotFound("not found")
        return self._respond_static(request, self._static_file(path[idx + len(prefix):]))

    # -- runs, datasets, networks -----------------------------------------------------------------------
    @route()
    def _serve_runs(self, request, params):
        check_keys(params, set())
        out = []
        for name, run_dir in self.runs.runs().items():
            entry = {"name": name, "dataset": paths.is_dataset(run_dir), "images": 0, "labelled": 0,
                     "active_jobs": 0}
            if entry["dataset"]:
                with Store(run_dir) as store:
                    entry["images"] = store.image_count()
                    entry["labelled"] = store.conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
            js = jobs.JobStore.open_if_exists(run_dir)
            if js is not None:
                with js:
                    entry["active_jobs"] = len(js.list(states=jobs.ACTIVE_STATES))
            out.append(entry)
        answer = {"version": __version__, "logdir": str(self.runs.logdir) if self.runs.logdir else None,
                  "runs": out, "jobs": self.jobs.status()}
        if not out:
            answer["onboarding"] = (
                "No NIPGBoard dataset in this logdir yet. Start an 'ingest' job with the absolute path of an "
                "image folder (optionally a labels CSV, or class subfolders) and a new run name, or run "
                "`nipgboard init LOGDIR/RUN --images FOLDER` in a shell.")
        return json_response(request, answer)

    @route()
    def _serve_summary(self, request, params):
        check_keys(params, {"run"})
        name, run_dir = self._dataset(params)
        with Store(run_dir) as store:
            summary = store.summary()
        summary["run"] = name
        return json_response(request, summary)

    @route()
    def _serve_networks(self, request, params):
        check_keys(params, {"run"})
        from . import backbones, features

        run_dir = self._dataset(params)[1] if "run" in params else None
        counts = {}
        if run_dir is not None and paths.features_path(run_dir).is_file():
            cache = features.open_cache(run_dir)
            try:
                cache.execute("ATTACH DATABASE ? AS ds", (str(paths.db_path(run_dir)),))
                counts = dict(cache.execute(
                    "SELECT f.key, COUNT(*) FROM ds.images i JOIN features f ON f.sha256 = i.sha256 GROUP BY f.key"))
            finally:
                cache.close()
        out = []
        for b in backbones.all_backbones():
            d = b.describe()
            if run_dir is not None:
                try:
                    d["cached"] = counts.get(b.cache_key(), 0)
                except Exception:  # noqa: BLE001 - a broken user network must not hide the others
                    d["cached"] = None
            out.append(d)
        return json_response(request, {"networks": out})

    @route()
    def _serve_kinds(self, request, params):
        check_keys(params, set())
        return json_response(request, {"kinds": jobs.kinds_info()})

    # -- jobs ------------------------------------------------------------------------------------------------
    @route()
    def _serve_jobs(self, request, params):
        check_keys(params, {"run", "limit", "active"})
        limit = p_int(params, "limit", 50, lo=1, hi=1000)
        states = jobs.ACTIVE_STATES if p_bool(params, "active", False) else None
        runs = self.runs.runs()
        if "run" in params:
            name = p_str(params, "run", max_len=1000)
            runs = {name: self.runs.resolve(name)}
        out = []
        for name, run_dir in runs.items():
            js = jobs.JobStore.open_if_exists(run_dir)
            if js is None:
                continue
            with js:
                out += [dict(j, run=name) for j in js.list(limit=limit, states=states)]
        out.sort(key=lambda j: j["created_at"], reverse=True)
        return json_response(request, {"jobs": out[:limit], "worker": self.jobs.status()})

    def _job_store(self, params):
        name = p_str(params, "run", max_len=1000)
        run_dir = self.runs.resolve(name)
        js = jobs.JobStore.open_if_exists(run_dir)
        if js is None:
            raise NotFound(f"run {name!r} has no jobs")
        return name, run_dir, js

    @route()
    def _serve_job(self, request, params):
        check_keys(params, {"run", "id"})
        job_id = clean_id(params.get("id"))
        name, _run_dir, js = self._job_store(params)
        with js:
            job = js.get(job_id)
        if job is None:
            raise NotFound(f"unknown job {job_id} in run {name!r}")
        return json_response(request, dict(job, run=name))

    @route(methods=("POST",))
    def _start_job(self, request, params):
        check_keys(params, {"run", "kind", "params"})
        kind_name = p_str(params, "kind", choices=sorted(k for k in jobs.KINDS if k != "warmup"))
        kind = jobs.KINDS[kind_name]
        if not kind.available():
            raise Conflict(f"job kind {kind_name!r} is not available in this installation")
        job_params = params.get("params", {})
        if not isinstance(job_params, dict):
            raise BadRequest("parameter 'params' must be an object")
        name = p_str(params, "run", max_len=1000)
        if kind.needs_dataset:
            run_dir = self.runs.dataset_dir(name)
        else:
            try:
                run_dir = self.runs.resolve(name)
            except UserError:
                run_dir = self.runs.new_run_dir(name)
        clean = kind.validate(job_params, run_dir)
        job = self.jobs.submit(run_dir, kind_name, clean)
        return json_response(request, dict(job, run=name), code=202)

    @route(methods=("POST",))
    def _cancel_job(self, request, params):
        check_keys(params, {"run", "id"})
        job_id = clean_id(params.get("id"))
        name, run_dir, js = self._job_store(params)
        with js:
            if js.get(job_id) is None:
                raise NotFound(f"unknown job {job_id} in run {name!r}")
        return json_response(request, dict(self.jobs.cancel(run_dir, job_id), run=name))

    # -- per-image data --------------------------------------------------------------------------------------
    @route()
    def _serve_metadata(self, request, params):
        check_keys(params, {"run", "network"})
        name, run_dir = self._dataset(params)
        with Store(run_dir) as store:
            rows = store.image_rows("id, path, split, width, height")
            labels = store.labels()
        ids = [r[0] for r in rows]
        out = {"run": name, "count": len(rows), "ids": ids, "paths": [r[1] for r in rows],
               "split": [r[2] for r in rows], "width": [r[3] for r in rows], "height": [r[4] for r in rows],
               "label": [labels.get(i) for i in ids]}
        if "network" in params:
            network = self._network_param(params)
            out["network"] = network
            out.update(self._result_columns(run_dir, network, np.asarray(ids, dtype=np.int64)))
        return json_response(request, out, clean=False)

    def _result_columns(self, run_dir, network, ids):
        """Predicted label, confidence and cluster per image, from whichever results exist."""
        cols = {}
        try:
            from . import results
        except ImportError:
            return cols
        for kind, fields in (("clusters", {"cluster": "cluster", "pred": "cluster_label"}),
                             ("predictions", {"pred": "predicted", "confidence": "confidence"})):
            if not results.has_result(run_dir, network, kind):
                continue
            arrays, meta = results.load_result(run_dir, network, kind)
            rows = results.align(arrays["image_ids"], ids)
            classes = meta.get("classes") or []
            for src, dst in fields.items():
                if src not in arrays:
                    continue
                col = arrays[src].tolist()
                vals = [None if r < 0 else col[r] for r in rows]
                if src == "pred" and arrays[src].dtype.kind in "iu":  # class codes, -1 for none
                    vals = [classes[v] if v is not None and 0 <= v < len(classes) else None for v in vals]
                elif arrays[src].dtype.kind == "f":
                    vals = [None if v is None or v != v or v in (float("inf"), float("-inf")) else v for v in vals]
                elif arrays[src].dtype.kind not in "iub":
                    vals = [None if v is None else str(v) for v in vals]
                cols[dst] = vals
        return cols

    @route()
    def _serve_points(self, request, params):
        check_keys(params, {"run", "network"})
        _name, run_dir = self._dataset(params)
        network = self._network_param(params)
        from . import results

        if not results.has_result(run_dir, network, "projection"):
            raise Conflict(f"no projection for network {network!r} yet: start a 'project' job")
        arrays, meta = results.load_result(run_dir, network, "projection")
        with Store(run_dir) as store:
            ids = np.asarray([r[0] for r in store.image_rows("id")], dtype=np.int64)
        coords = np.asarray(arrays["coords"], dtype=np.float32)
        rows = results.align(arrays["image_ids"], ids)
        out = np.full((len(ids), coords.shape[1]), np.nan, dtype=np.float32)
        out[rows >= 0] = coords[rows[rows >= 0]]
        headers = [("X-NIPGBoard-Count", str(len(ids))), ("X-NIPGBoard-Dims", str(coords.shape[1])),
                   ("X-NIPGBoard-Token", str(meta.get("token", "")))]
        return binary_response(request, out.astype("<f4").tobytes(), "application/octet-stream", headers=headers)

    @route()
    def _serve_clusters(self, request, params):
        check_keys(params, {"run", "network"})
        _name, run_dir = self._dataset(params)
        network = self._network_param(params)
        from . import graph, results

        if not results.has_result(run_dir, network, "clusters"):
            raise Conflict(f"no clusters for network {network!r} yet: start a 'cluster' job")
        arrays, meta = graph.load_clusters(run_dir, network)
        sizes = np.bincount(arrays["cluster"][arrays["cluster"] >= 0]) if len(arrays["cluster"]) else []
        return json_response(request, dict(meta, network=network, sizes=sizes))

    def _networks_param(self, params, name="networks"):
        """A comma-separated list of known network ids, or None when absent."""
        if not params.get(name):
            return None
        value = p_str(params, name, max_len=2000)
        return [self._network_param({"network": n.strip()}) for n in value.split(",") if n.strip()] or None

    @route()
    def _serve_metrics(self, request, params):
        check_keys(params, {"run", "networks", "positive"})
        _name, run_dir = self._dataset(params)
        networks = self._networks_param(params)
        positive = p_str(params, "positive", None, max_len=200)
        from . import evaluate

        try:
            return json_response(request, evaluate.metrics_report(run_dir, networks, positive=positive))
        except UserError as exc:  # nothing to evaluate yet: a state, not a bad request
            raise Conflict(str(exc)) from None

    @route()
    def _serve_review(self, request, params):
        check_keys(params, {"run", "networks", "limit", "low_confidence", "include_labelled", "all"})
        _name, run_dir = self._dataset(params)
        networks = self._networks_param(params)
        limit = p_int(params, "limit", 500, lo=1, hi=100000)
        low = p_float(params, "low_confidence", 0.6, lo=0.0, hi=1.0)
        include = p_bool(params, "include_labelled", False)
        flagged_only = not p_bool(params, "all", False)
        from . import review

        try:
            queue = review.review_queue(run_dir, networks, include_labelled=include, low_confidence=low,
                                        limit=limit, flagged_only=flagged_only)
        except UserError as exc:  # no predictions yet
            raise Conflict(str(exc)) from None
        return json_response(request, queue)

    # -- labels ----------------------------------------------------------------------------------------------
    @route(methods=("POST",), max_body=LABELS_MAX_BODY)
    def _set_labels(self, request, params):
        check_keys(params, {"run", "id", "ids", "assignments", "label", "cluster", "report"})
        report = p_bool(params, "report", False)
        name, run_dir = self._dataset(params)
        forms = [k for k in ("id", "ids", "assignments", "cluster") if k in params]
        if len(forms) != 1:
            raise BadRequest("give exactly one of 'id', 'ids', 'assignments' or 'cluster'")
        form = forms[0]
        if form == "assignments":
            if "label" in params:
                raise BadRequest("'assignments' carries its labels; do not give 'label' too")
            items = params["assignments"]
            if not isinstance(items, list) or not items or len(items) > 200_000:
                raise BadRequest("'assignments' must be a non-empty list of [id, label] pairs (200000 at most)")
            pairs = []
            for i, item in enumerate(items):
                if not isinstance(item, (list, tuple)) or len(item) != 2:
                    raise BadRequest(f"assignments[{i}] must be a pair [id, label]")
                pairs.append((clean_id(item[0], f"assignments[{i}] id"), clean_label(item[1], f"assignments[{i}] label")))
        else:
            if "label" not in params:
                raise BadRequest("parameter 'label' is required (a string, or null to remove the label)")
            label = clean_label(params["label"])
            if form == "id":
                ids = [clean_id(params["id"])]
            elif form == "ids":
                ids = p_id_list(params, "ids")
            else:
                ids = self._cluster_members(run_dir, params["cluster"])
            pairs = [(i, label) for i in ids]
        with Store(run_dir) as store:
            before = store.labels()
            try:
                changed = store.set_labels(pairs, source="user")
            except KeyError as exc:
                raise NotFound(str(exc.args[0]) if exc.args else "unknown image id") from None
            now = store.labels()
            user_labels = dict(store.conn.execute("SELECT image_id, label FROM labels WHERE source='user'")) \
                if report else None
        answer = {"run": name, "changed": changed, "requested": len(pairs),
                  "labels": {str(i): now.get(i) for i, _ in pairs},
                  "previous": {str(i): before.get(i) for i, _ in pairs[:1000]}}
        if report:  # how often each network's stored predictions agree with the expert
            from . import review
            answer["after_review"] = review.review_metrics(
                run_dir, {i: lab for i, lab in pairs if lab is not None}, user_labels)
        return json_response(request, answer)

    def _cluster_members(self, run_dir, spec):
        if not isinstance(spec, dict):
            raise BadRequest("'cluster' must be an object {network, cluster[, overwrite]}")
        check_keys(spec, {"network", "cluster", "overwrite"})
        network = self._network_param(spec)
        cluster = p_int(spec, "cluster", lo=0, hi=10 ** 9)
        overwrite = p_bool(spec, "overwrite", False)
        from . import graph, results

        if not results.has_result(run_dir, network, "clusters"):
            raise Conflict(f"no clusters for network {network!r} yet: start a 'cluster' job")
        arrays, _meta = graph.load_clusters(run_dir, network)
        members = arrays["image_ids"][arrays["cluster"] == cluster]
        if len(members) == 0:
            raise NotFound(f"no cluster {cluster} for network {network!r}")
        if overwrite:
            return [int(i) for i in members]
        with Store(run_dir) as store:  # as `nipgboard label --cluster`: members with a label keep it
            labelled = store.labels()
        todo = [int(i) for i in members if int(i) not in labelled]
        if not todo:
            raise Conflict(f"every image of cluster {cluster} has a label already; "
                           "give \"overwrite\": true to relabel them all")
        return todo

    @route()
    def _serve_label_history(self, request, params):
        check_keys(params, {"run", "id", "limit"})
        name, run_dir = self._dataset(params)
        image_id = clean_id(params["id"]) if "id" in params else None
        limit = p_int(params, "limit", 1000, lo=1, hi=1_000_000)
        with Store(run_dir) as store:
            if image_id is not None and store.image_by_id(image_id) is None:
                raise NotFound(f"unknown image id {image_id}")
            history = store.label_history(image_id, limit=limit)
        return json_response(request, {"run": name, "history": history})

    @route()
    def _serve_export(self, request, params):
        check_keys(params, {"run", "networks", "low_confidence"})
        name, run_dir = self._dataset(params)
        networks = self._networks_param(params)
        low = p_float(params, "low_confidence", 0.6, lo=0.0, hi=1.0)
        from . import export

        # Written inside the run's data folder (never elsewhere), read back, then removed.
        out = paths.data_dir(run_dir) / "exports" / f".labels-{uuid.uuid4().hex}.csv"
        try:
            export.export_csv(run_dir, out, networks=networks, low_confidence=low)
            data = out.read_bytes()
        finally:
            out.unlink(missing_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (name if name != "." else "dataset"))
        return binary_response(request, data, "text/csv; charset=utf-8",
                               headers=[("Content-Disposition", f'attachment; filename="{safe}-labels.csv"')])

    # -- pictures ----------------------------------------------------------------------------------------------
    @route()
    def _serve_sprite_index(self, request, params):
        check_keys(params, {"run", "tile"})
        _name, run_dir = self._dataset(params)
        tile = p_int(params, "tile", thumbnails.DEFAULT_TILE)
        with Store(run_dir) as store:
            return json_response(request, thumbnails.sprite_index(run_dir, store, tile))

    @route()
    def _serve_sprite(self, request, params):
        check_keys(params, {"run", "tile", "page"})
        _name, run_dir = self._dataset(params)
        tile = p_int(params, "tile", thumbnails.DEFAULT_TILE)
        page = p_int(params, "page", lo=0, hi=10 ** 6)
        with Store(run_dir) as store:
            data = thumbnails.sprite_page(run_dir, store, tile, page)
        return binary_response(request, data, "image/jpeg")

    @route()
    def _serve_thumbnail(self, request, params):
        check_keys(params, {"run", "id", "size"})
        _name, run_dir = self._dataset(params)
        image_id = clean_id(params.get("id", REQUIRED))
        size = p_int(params, "size", 128)
        with Store(run_dir) as store:
            data = thumbnails.thumbnail(run_dir, store, image_id, size)
        return binary_response(request, data, "image/jpeg", expires=3600)

    @route()
    def _serve_image(self, request, params):
        check_keys(params, {"run", "id"})
        _name, run_dir = self._dataset(params)
        image_id = clean_id(params.get("id", REQUIRED))
        with Store(run_dir) as store:
            data, ctype = thumbnails.full_image(store, image_id)
        return binary_response(request, data, ctype, expires=3600)

    # -- neighbours -----------------------------------------------------------------------------------------
    @route()
    def _serve_similar(self, request, params):
        check_keys(params, {"run", "network", "id", "k"})
        name, run_dir = self._dataset(params)
        network = self._network_param(params)
        image_id = clean_id(params.get("id", REQUIRED))
        k = p_int(params, "k", 10, lo=1, hi=1000)
        ids, Xn = self._features(run_dir, network)
        hit = np.flatnonzero(ids == image_id)
        if len(hit) == 0:
            raise NotFound(f"unknown image id {image_id}")
        from .neighbours import most_similar

        rows, dist = most_similar(Xn, int(hit[0]), k)
        with Store(run_dir) as store:
            out = []
            for r, d in zip(rows, dist):
                info = store.image_by_id(int(ids[r]))
                out.append({"id": info["id"], "path": info["path"], "split": info["split"],
                            "distance": round(float(d), 5)})
        return json_response(request, {"run": name, "network": network, "id": image_id, "similar": out})

    @route()
    def _serve_duplicates(self, request, params):
        check_keys(params, {"run", "network", "threshold"})
        name, run_dir = self._dataset(params)
        network = self._network_param(params)
        threshold = p_float(params, "threshold", 0.3, lo=0.0, hi=2.0)
        ids, Xn = self._features(run_dir, network)
        from .neighbours import near_duplicate_groups

        groups = near_duplicate_groups(Xn, threshold)
        return json_response(request, {"run": name, "network": network, "threshold": threshold,
                                       "distance": "euclidean, L2-normalised features",
                                       "groups": [[int(ids[r]) for r in g] for g in groups]})
