"""The TensorBoard plugin: routes under ``/data/plugin/nipgboard/``, nothing else.

Routes parse, call, answer (as TensorBoard's ``example_basic`` does): each checks its parameters with
the steps' own declarations (:mod:`.params`, :mod:`.steps`), calls the run facade (:class:`.run.Run`)
or submits a job, and serialises the answer. Long work is a job run by the worker process of
:mod:`.jobs`; routes only submit, report and cancel jobs, so the server stays responsive meanwhile.

GET routes take query parameters, POST routes a JSON object body (header ``X-NIPGBoard: 1``, same
origin; 1 MiB at most, 8 MiB for labels). ``run`` is a name from ``/runs``. A step's parameters (and
their defaults) are those ``/kinds`` lists. Errors are ``{"error", "status"}``: 400 bad parameter,
403 refused, 404 unknown run/image/job/network, 405 wrong method, 409 an earlier step is missing (the
message says which), 413 body too large, 415 body not JSON.

==============  =======================================  ========================================================
route           parameters                               answer
==============  =======================================  ========================================================
/index.js       -                                        the panel's module (exports ``render()``)
/runs           -                                        runs, counts, active jobs, worker; ``onboarding``
/summary        run                                      counts, unreadable files with reasons, duplicates
/networks       [run]                                    networks: sizes, weights, availability, images/s here; ``cached`` images with features
/kinds          -                                        job kinds (steps): typed parameters, needs, produces
/jobs, /job     [run, limit, active] / run, id           jobs (state, stage, done/total, rate, eta, result)
/metadata       run [network]                            per-image columns in id order (+ clusters, predictions)
/points         run, network                             float32 coordinates in id order (NaN: not projected)
/clusters       run, network                             cluster table, parameters, sizes
/metrics        run + the evaluate step's                metrics table (train/test per network)
/accuracy       run, network                             estimated accuracy after each prediction (when to stop)
/review         run + the disagreements step's           the review queue, most doubtful first
/label_history  run [id, limit]                          label changes, oldest first
/export         run + the export step's                  the labels CSV
/sprite_index   run [tile]                               atlas pages of thumbnails; /sprite run, page [tile]
/thumbnail      run, id [size]                           a thumbnail (JPEG)
/image          run, id                                  the full image (PNG when browsers cannot show it)
/similar        run + the similar step's                 most similar images, with distances
/duplicates     run + the duplicates step's              near-duplicate groups
POST /start_job run, kind, params                        202 + the queued job; ``pipeline`` chains steps
POST /cancel_job run, id                                 the job (cancelled, or stopping)
POST /set_labels run, label and one of id | ids |        changed, requested, labels now, previous labels
                assignments [[id, label]] | cluster      (read in the same transaction); with ``report``
                {network, cluster[, overwrite]}          each network's agreement with the expert
==============  =======================================  ========================================================

Every route checks ``Host`` (and ``Origin`` where sent) against DNS rebinding and other sites. Paths a
request names (``ingest``'s folder and labels file) must lie inside the folders the person who started
the server allowed: the logdir, and those given with ``--nipgboard_roots`` or ``NIPGBOARD_ROOTS``
(separated by ``:``), checked after resolving links.
"""
import logging
import mimetypes
import os
import threading
from pathlib import Path

from tensorboard.plugins import base_plugin

from . import __version__, jobs, paths, steps, web
from .errors import InvalidParameter, NotFound, Unavailable, UserError
from .labels import clean_label
from .params import Param, check_keys, check_network
from .run import Run
from .steps.embed import RAY_ENV
from .runs import RunIndex
from .web import LABELS_MAX_BODY, binary_response, json_response, route

logger = logging.getLogger("nipgboard")

PLUGIN_NAME = "nipgboard"
STATIC_DIR = Path(__file__).resolve().parent / "static"
FALLBACK_FRONTEND = "minimal"          # static/minimal/: a page saying how to build the panel's bundle
STATIC_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
                ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml",
                ".png": "image/png", ".jpg": "image/jpeg", ".wasm": "application/wasm", ".txt": "text/plain"}
ROOTS_ENV = "NIPGBOARD_ROOTS"

# Route parameters that are no step's: declared once here.
RUN = Param("run", "str", None, max_len=1000, help="a run name from /runs")
IMAGE_ID = Param("id", "int", None, 1, 2 ** 62, help="image id")
JOB_ID = Param("id", "int", None, 1, 2 ** 62, help="job id")
LIMIT = Param("limit", "int", 50, 1, 1000)
ACTIVE = Param("active", "bool", False)
TILE = steps.get("sprites").param("tile")
PAGE = Param("page", "int", None, 0, 10 ** 6)
THUMB_SIZE = Param("size", "int", 128, 16, 512)
HISTORY_LIMIT = Param("limit", "int", 1000, 1, 1_000_000)
REPORT = Param("report", "bool", False)
CLUSTER = Param("cluster", "int", None, 0, 10 ** 9)
OVERWRITE = Param("overwrite", "bool", False)
MAX_ASSIGNMENTS = 200_000


def _preload():
    try:
        from . import backbones, features, neighbours  # noqa: F401
    except Exception:  # noqa: BLE001 - the routes report import problems themselves
        logger.debug("nipgboard: preloading failed", exc_info=True)


def _required(param, params):
    value = param.clean(params.get(param.name))
    if value is None:
        raise InvalidParameter(f"parameter {param.name!r} is required")
    return value


class NipgboardLoader(base_plugin.TBLoader):
    """Entry point of the ``tensorboard_plugins`` group."""

    def define_flags(self, parser):
        parser.add_argument(
            "--nipgboard_roots", default=None, metavar="DIRS",
            help="NIPGBoard: folders (separated by ':') whose images and label files may be added from the "
                 "browser, besides the logdir. Nothing outside them is read on a browser's request.")
        parser.add_argument(
            "--nipgboard_ray", default=None, metavar="ADDRESS",
            help="NIPGBoard: extract features of embed jobs on this Ray cluster (HOST:PORT of its head node, "
                 "ray://HOST:10001, auto, or local); the same as setting NIPGBOARD_RAY.")

    def load(self, context):
        return NipgboardPlugin(context)


class NipgboardPlugin(base_plugin.TBPlugin):
    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        self.context = context
        flags = getattr(context, "flags", None)
        web.allow_hosts(getattr(flags, "host", None))
        logdir = getattr(context, "logdir", None)
        self.runs = RunIndex(logdir)
        if logdir:
            web.redact_paths_under(logdir)
        self.allowed_roots = self._allowed_roots(logdir, getattr(flags, "nipgboard_roots", None))
        web.redact_paths_in_roots(self.allowed_roots)
        if getattr(flags, "nipgboard_ray", None):  # the job worker inherits it: embed jobs extract on Ray
            os.environ[RAY_ENV] = flags.nipgboard_ray
        self.jobs = jobs.JobManager(self.runs)
        self.jobs.start()  # re-queues interrupted jobs and, with datasets present, starts (and warms) the worker
        # Import what the neighbour and network routes need (scikit-learn, the network registry) now,
        # in the background, rather than in the first request that needs them.
        threading.Thread(target=_preload, name="nipgboard-preload", daemon=True).start()

    @staticmethod
    def _allowed_roots(logdir, flag):
        roots = [logdir] if logdir else []
        for text in (flag, os.environ.get(ROOTS_ENV)):
            roots += [r for r in (text or "").split(os.pathsep) if r.strip()]
        return [os.path.realpath(r) for r in roots if os.path.isabs(r)]

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
            "/accuracy": self._serve_accuracy,
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
    def _run(self, params) -> Run:
        """The dataset run named by ``run``."""
        name = _required(RUN, params)
        return Run(self.runs.dataset_dir(name), name)

    def _step_params(self, step_name, params, extra=("run",)):
        """Route parameters checked by a step's own declarations (``extra``: the route's own names)."""
        step = steps.get(step_name)
        given = {k: v for k, v in params.items() if k not in extra}
        return step.clean(given, face="web")

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
                     "active_jobs": jobs.active_count(run_dir)}
            if entry["dataset"]:
                entry.update(Run(run_dir, name).counts())
            out.append(entry)
        answer = {"version": __version__, "logdir": str(self.runs.logdir) if self.runs.logdir else None,
                  "runs": out, "jobs": self.jobs.status()}
        if not out:
            answer["onboarding"] = (
                "No NIPGBoard dataset in this logdir yet. Start an 'ingest' job with the absolute path of an "
                "image folder inside the logdir or a folder allowed with --nipgboard_roots (optionally a "
                "labels CSV, or class subfolders) and a new run name, or run "
                "`nipgboard init LOGDIR/RUN --images FOLDER` in a shell.")
        return json_response(request, answer)

    @route()
    def _serve_summary(self, request, params):
        check_keys(params, {"run"})
        run = self._run(params)
        return json_response(request, dict(run.summary(), run=run.name))

    @route()
    def _serve_networks(self, request, params):
        check_keys(params, {"run"})
        from . import backbones, features

        counts = features.cached_per_network(self._run(params).dir) if "run" in params else None
        out, nets = [], backbones.all_backbones()
        for b, d in zip(nets, backbones.describe_all(nets)):
            if counts is not None:
                try:
                    d["cached"] = counts.get(b.cache_key(), 0)
                except Exception:  # noqa: BLE001 - a broken user network must not hide the others
                    d["cached"] = None
            out.append(d)
        return json_response(request, {"networks": out})

    @route()
    def _serve_kinds(self, request, params):
        check_keys(params, set())
        return json_response(request, {"kinds": [s.describe() for s in steps.job_steps().values()]})

    # -- jobs ------------------------------------------------------------------------------------------------
    @route()
    def _serve_jobs(self, request, params):
        check_keys(params, {"run", "limit", "active"})
        limit = LIMIT.clean(params.get("limit"))
        states = jobs.ACTIVE_STATES if ACTIVE.clean(params.get("active")) else None
        runs = self.runs.runs()
        if "run" in params:
            name = _required(RUN, params)
            runs = {name: self.runs.resolve(name)}
        out = []
        for name, run_dir in runs.items():
            out += [dict(j, run=name) for j in jobs.list_jobs(run_dir, limit=limit, states=states)]
        out.sort(key=lambda j: j["created_at"], reverse=True)
        return json_response(request, {"jobs": out[:limit], "worker": self.jobs.status()})

    def _job(self, params):
        name = _required(RUN, params)
        job_id = _required(JOB_ID, params)
        run_dir = self.runs.resolve(name)
        job = jobs.get_job(run_dir, job_id)
        if job is None:
            raise NotFound(f"unknown job {job_id} in run {name!r}")
        return name, run_dir, job

    @route()
    def _serve_job(self, request, params):
        check_keys(params, {"run", "id"})
        name, _run_dir, job = self._job(params)
        return json_response(request, dict(job, run=name))

    @route(methods=("POST",))
    def _start_job(self, request, params):
        check_keys(params, {"run", "kind", "params"})
        kinds = steps.job_steps()
        kind = Param("kind", "choice", None, choices=tuple(kinds)).clean(params.get("kind"))
        if kind is None:
            raise InvalidParameter("parameter 'kind' is required")
        step = kinds[kind]
        if not step.available():
            raise Unavailable(f"job kind {kind!r} is not available in this installation")
        job_params = params.get("params", {})
        if not isinstance(job_params, dict):
            raise InvalidParameter("parameter 'params' must be an object")
        name = _required(RUN, params)
        if step.needs_dataset:
            run_dir = self.runs.dataset_dir(name)
        else:
            try:
                run_dir = self.runs.resolve(name)
            except UserError:
                run_dir = self.runs.new_run_dir(name)
        clean = step.clean(job_params, run_dir, face="web", allowed_roots=self.allowed_roots)
        job = self.jobs.submit(run_dir, kind, clean)
        return json_response(request, dict(job, run=name), code=202)

    @route(methods=("POST",))
    def _cancel_job(self, request, params):
        check_keys(params, {"run", "id"})
        name, run_dir, job = self._job(params)
        return json_response(request, dict(self.jobs.cancel(run_dir, job["id"]), run=name))

    # -- per-image data --------------------------------------------------------------------------------------
    @route()
    def _serve_metadata(self, request, params):
        check_keys(params, {"run", "network"})
        network = check_network(params["network"], runnable=False) if "network" in params else None
        return json_response(request, self._run(params).metadata(network), clean=False)

    @route()
    def _serve_points(self, request, params):
        check_keys(params, {"run", "network"})
        run = self._run(params)
        coords, token = run.points(check_network(params.get("network"), runnable=False))
        headers = [("X-NIPGBoard-Count", str(len(coords))), ("X-NIPGBoard-Dims", str(coords.shape[1])),
                   ("X-NIPGBoard-Token", str(token))]
        return binary_response(request, coords.astype("<f4").tobytes(), "application/octet-stream", headers=headers)

    @route()
    def _serve_clusters(self, request, params):
        check_keys(params, {"run", "network"})
        run = self._run(params)
        return json_response(request, run.clusters(check_network(params.get("network"), runnable=False)))

    @route()
    def _serve_accuracy(self, request, params):
        check_keys(params, {"run", "network"})
        run = self._run(params)
        return json_response(request, run.accuracy(check_network(params.get("network"), runnable=False)))

    @route()
    def _serve_metrics(self, request, params):
        run = self._run(params)
        return json_response(request, steps.get("evaluate").call(run.dir, self._step_params("evaluate", params)))

    @route()
    def _serve_review(self, request, params):
        run = self._run(params)
        return json_response(request, steps.get("disagreements").call(
            run.dir, self._step_params("disagreements", params)))

    # -- labels ----------------------------------------------------------------------------------------------
    @route(methods=("POST",), max_body=LABELS_MAX_BODY)
    def _set_labels(self, request, params):
        check_keys(params, {"run", "id", "ids", "assignments", "label", "cluster", "report"})
        report = REPORT.clean(params.get("report"))
        run = self._run(params)
        forms = [k for k in ("id", "ids", "assignments", "cluster") if k in params]
        if len(forms) != 1:
            raise InvalidParameter("give exactly one of 'id', 'ids', 'assignments' or 'cluster'")
        form = forms[0]
        if form == "assignments":
            if "label" in params:
                raise InvalidParameter("'assignments' carries its labels; do not give 'label' too")
            items = params["assignments"]
            if not isinstance(items, list) or not items or len(items) > MAX_ASSIGNMENTS:
                raise InvalidParameter(f"'assignments' must be a non-empty list of [id, label] pairs "
                                       f"({MAX_ASSIGNMENTS} at most)")
            pairs = []
            for i, item in enumerate(items):
                if not isinstance(item, (list, tuple)) or len(item) != 2:
                    raise InvalidParameter(f"assignments[{i}] must be a pair [id, label]")
                pairs.append((_required(IMAGE_ID, {"id": item[0]}), clean_label(item[1], f"assignments[{i}] label")))
        else:
            if "label" not in params:
                raise InvalidParameter("parameter 'label' is required (a string, or null to remove the label)")
            label = clean_label(params["label"])
            if form == "id":
                ids = [_required(IMAGE_ID, params)]
            elif form == "ids":
                ids = self._id_list(params["ids"])
            else:
                spec = params["cluster"]
                if not isinstance(spec, dict):
                    raise InvalidParameter("'cluster' must be an object {network, cluster[, overwrite]}")
                check_keys(spec, {"network", "cluster", "overwrite"})
                ids = run.cluster_members(check_network(spec.get("network"), runnable=False),
                                          _required(CLUSTER, spec), OVERWRITE.clean(spec.get("overwrite")))
            pairs = [(i, label) for i in ids]
        return json_response(request, run.set_labels(pairs, report=report))

    @staticmethod
    def _id_list(value):
        if not isinstance(value, list) or not value:
            raise InvalidParameter("parameter 'ids' must be a non-empty list of image ids")
        if len(value) > MAX_ASSIGNMENTS:
            raise InvalidParameter(f"parameter 'ids' lists {len(value)} ids; at most {MAX_ASSIGNMENTS} at once")
        return [_required(IMAGE_ID, {"id": v}) for v in value]

    @route()
    def _serve_label_history(self, request, params):
        check_keys(params, {"run", "id", "limit"})
        run = self._run(params)
        return json_response(request, run.label_history(IMAGE_ID.clean(params.get("id")),
                                                        HISTORY_LIMIT.clean(params.get("limit"))))

    @route()
    def _serve_export(self, request, params):
        run = self._run(params)
        p = self._step_params("export", params)
        data = run.export_bytes(networks=p["networks"], low_confidence=p["low_confidence"])
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (run.name if run.name != "." else "dataset"))
        return binary_response(request, data, "text/csv; charset=utf-8",
                               headers=[("Content-Disposition", f'attachment; filename="{safe}-labels.csv"')])

    # -- pictures ----------------------------------------------------------------------------------------------
    @route()
    def _serve_sprite_index(self, request, params):
        check_keys(params, {"run", "tile"})
        return json_response(request, self._run(params).sprite_index(TILE.clean(params.get("tile"))))

    @route()
    def _serve_sprite(self, request, params):
        check_keys(params, {"run", "tile", "page"})
        data = self._run(params).sprite_page(TILE.clean(params.get("tile")), _required(PAGE, params))
        return binary_response(request, data, "image/jpeg")

    @route()
    def _serve_thumbnail(self, request, params):
        check_keys(params, {"run", "id", "size"})
        data = self._run(params).thumbnail(_required(IMAGE_ID, params), THUMB_SIZE.clean(params.get("size")))
        return binary_response(request, data, "image/jpeg", expires=3600)

    @route()
    def _serve_image(self, request, params):
        check_keys(params, {"run", "id"})
        data, ctype = self._run(params).full_image(_required(IMAGE_ID, params))
        return binary_response(request, data, ctype, expires=3600)

    # -- neighbours -----------------------------------------------------------------------------------------
    @route()
    def _serve_similar(self, request, params):
        run = self._run(params)
        p = self._step_params("similar", params)
        return json_response(request, dict(run.similar(p["network"], run.image_id(image_id=p["id"]), p["k"]),
                                           run=run.name))

    @route()
    def _serve_duplicates(self, request, params):
        run = self._run(params)
        p = self._step_params("duplicates", params)
        return json_response(request, dict(run.duplicates(p["network"], p["threshold"]), run=run.name))
