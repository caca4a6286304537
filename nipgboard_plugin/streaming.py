"""The first picture early: a pipeline's embed and project in phases, so that the view opens long
before every image is embedded (70,000 images take some 12 minutes on 2 cores).

1. The labelled train images are embedded first and a first view is fitted on them.
2. Then the test images and the unlabelled images that the project step's own fit takes (with few
   labels, a seeded sample of the pool: :func:`.projection.fit_set_mask`). The view is fitted again on
   them: the very fit the project step would make with every image embedded, so it stays as the final
   one.
3. The other images are embedded in chunks, in a seeded random order (a folder per class would
   otherwise arrive class by class). Each chunk is placed in that fit by ``transform`` as it comes.

After every phase the projection result is rewritten with the images placed so far. The others have
no coordinates, so the panel leaves them out. The job's preview (``ctx.preview``) says how many are
placed. If the labels change meanwhile, :func:`embed_and_place` says so and the pipeline fits again.
"""
import time

import numpy as np

from . import features, results
from .errors import Cancelled, UserError
from .feature_store import FeatureStore
from .projection import fit_set_mask, project_dataset
from .store import Store

CHUNKS = 8        # the images after the fit arrive in about this many updates of the view
MIN_CHUNK = 256


def _dataset(run_dir):
    """(ids, sha256 per id, roles, the train labels' fingerprint) of every image, in id order."""
    with Store(run_dir) as store:
        rows = store.image_rows("id, sha256")
        labels, splits = store.labels(), store.splits()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    roles = results.roles_for(ids, labels, splits)
    lab = np.array([labels.get(int(i)) for i in ids], dtype=object)
    return ids, dict(rows), roles, results.labels_fingerprint(ids, lab, roles)


def missing_count(run_dir, network) -> int:
    """Images of the dataset with no features for the network yet."""
    key = features.resolve_backbone(network).cache_key()
    with Store(run_dir) as store:
        shas = {sha for (sha,) in store.image_rows("sha256")}
    with FeatureStore(run_dir) as cache:
        return len(shas - cache.hashes(key))


def plan(ids, roles, project):
    """[(phase name, image ids)] in the order they are embedded, the final fit set's mask and name."""
    fit_mode = project["mode"] if project["method"] == "umap" else "unsupervised"
    fit_mask, fit_on = fit_set_mask(roles, fit_mode, project["fit_on"], project["pool_sample"],
                                    project.get("random_state", 0))
    train, later = roles == "train", (roles == "test") | (fit_mask & (roles == "pool"))
    rest = ids[~(train | later)]
    rest = rest[np.random.default_rng(project.get("random_state", 0) or 0).permutation(len(rest))]
    chunk = max(MIN_CHUNK, -(-len(rest) // CHUNKS))
    phases = [(FIRST, ids[train]), ("test images and the fit's unlabelled images", ids[later])]
    phases += [("the rest", rest[i:i + chunk]) for i in range(0, len(rest), chunk)]
    return [(name, part) for name, part in phases if len(part)], fit_mask, fit_on


FIRST = "labelled images"


class _Phases:
    """What happens when each phase's images are all embedded: fit the view, or place them in it."""

    def __init__(self, ctx, run_dir, network, project, ids, sha_of, roles):
        self.ctx, self.run_dir, self.network, self.project = ctx, run_dir, network, project
        self.ids, self.sha_of = ids, sha_of
        self.phases, fit_mask, self.fit_on = plan(ids, roles, project)
        self.fit_ids = set(ids[fit_mask].tolist())
        self.options = {k: v for k, v in project.items()
                        if k not in ("network", "mode", "fit_on", "pool_sample", "projector")}
        self.embedded, self.placed, self.fitted, self.model = [], None, None, None
        self.next = 0
        self.seconds = 0.0          # spent fitting and placing (not extracting)

    def order(self):
        return [int(i) for _, part in self.phases for i in part]

    def ends(self, cached):
        """The extraction's count (images it extracts, once per content) when each phase is embedded."""
        seen, n, out = set(cached), 0, []
        for _, part in self.phases:
            for i in part:
                sha = self.sha_of[int(i)]
                if sha not in seen:
                    seen.add(sha)
                    n += 1
            out.append(n)
        return out

    def after(self, done, ends):
        """Act on every phase the extraction has finished by its count ``done``."""
        while self.next < len(self.phases) and done >= ends[self.next]:
            t0 = time.monotonic()
            with features.paused_extraction():     # the fit compiles: not extraction, for the worker's warm-up
                self._act(*self.phases[self.next])
            self.next += 1
            self.seconds += time.monotonic() - t0

    def _act(self, name, part):
        ctx, run_dir, network = self.ctx, self.run_dir, self.network
        self.embedded.extend(int(i) for i in part)
        if self.model is None:
            final = self.fit_ids <= set(self.embedded)
            if not final and name != FIRST:
                return
            ctx.stage(f"fitting the view on {'its fit set' if final else 'the labelled images'}")
            fitted = _fit(run_dir, network, self.project, self.options, self.embedded, self.sha_of,
                          self.fit_on if final else None)
            if fitted is None:
                return
            self.fitted, self.placed = fitted, _placed(run_dir, network)
            if final:
                self.model = results.load_projection_model(run_dir, network)
        else:
            ctx.stage(f"placing {len(part)} more images in the view")
            self.placed = _place(run_dir, network, self.model, self.placed, part, self.sha_of)
        ctx.preview({"network": network, "placed": int(len(self.placed[0])), "images": int(len(self.ids)),
                     "phase": name})


def embed_and_place(ctx, run_dir, network, embed_params, project):
    """Embed every image missing features, opening the view early (see the module's docstring).

    One extraction, in the phases' order; when a phase's images are all embedded, the view is fitted
    or they are placed in it (the decoding threads wait meanwhile). ``project``: the project step's
    checked parameters. Returns the embed step's result, its last :class:`.features.Progress` (None when
    nothing was extracted; its seconds count the extraction alone) and the project step's result, the
    latter None when the labels changed meanwhile (the project step must fit again).
    """
    from .steps.embed import ray_address

    ids, sha_of, roles, fingerprint = _dataset(run_dir)
    phases = _Phases(ctx, run_dir, network, project, ids, sha_of, roles)
    with FeatureStore(run_dir) as cache:
        ends = phases.ends(cache.hashes(features.resolve_backbone(network).cache_key()))
    phases.after(0, ends)       # phases whose images all have features already: the view opens at once
    phases.seconds = 0.0        # the extraction's clock starts after this
    last = []

    def progress(pr):
        where = f" ({pr.where})" if pr.where else ""
        name = phases.phases[min(phases.next, len(ends) - 1)][0]
        ctx.stage_once(f"extracting features{where}: {name}", pr.total)
        ctx.progress(pr.done, pr.total, rate=pr.rate, eta=pr.eta, check_cancel=False)
        phases.after(pr.done, ends)
        last[:] = [features.Progress(pr.done, pr.total, max(pr.seconds - phases.seconds, 1e-9), pr.where)]

    result = features.embed(run_dir, network, batch_size=embed_params["batch_size"], progress=progress,
                            should_stop=ctx.should_stop, device=embed_params["device"], ray=ray_address(embed_params),
                            ray_workers=embed_params["ray_workers"], only=phases.order())
    result["seconds_placing"] = round(phases.seconds, 3)    # of its seconds, those fitting and placing the view
    if result["stopped"]:
        raise Cancelled(result)
    phases.after(float("inf"), ends)     # the last phases, when their images had features already
    fitted, placed, model = phases.fitted, phases.placed, phases.model
    project_result = _summary(fitted, placed, roles)
    if _dataset(run_dir)[3] != fingerprint or model is None:
        project_result = None
    return result, (last[0] if last else None), project_result


def _subset(run_dir, network, image_ids, sha_of):
    """:class:`results.Inputs` of these images, from the features cached so far."""
    inp = results.load_inputs(run_dir, network, features=False)
    rows = results.align(inp.image_ids, np.sort(np.asarray(image_ids, dtype=np.int64)))
    rows = rows[rows >= 0]
    key = features.resolve_backbone(network).cache_key()
    with FeatureStore(run_dir) as cache:
        vectors = cache.vectors(key, [sha_of[int(i)] for i in inp.image_ids[rows]])
    rows = np.array([r for r in rows if sha_of[int(inp.image_ids[r])] in vectors], dtype=np.int64)
    X = np.stack([vectors[sha_of[int(i)]] for i in inp.image_ids[rows]]).astype(np.float32)
    return results.Inputs(image_ids=inp.image_ids[rows], X=X, labels=inp.labels[rows], roles=inp.roles[rows],
                          paths=inp.paths[rows])


def _fit(run_dir, network, project, options, embedded, sha_of, fit_on=None):
    """Fit the view on the images embedded so far, placing the others among them: the final fit
    (``fit_on`` names its set; the unlabelled images embedded so far are that set's own, so a
    ``train+sample`` fit takes them all), or without ``fit_on`` a first look fitted on the train
    images, None when they are too few for it."""
    inp = _subset(run_dir, network, embedded, sha_of)
    try:
        return project_dataset(run_dir, network, mode=project["mode"], fit_on=fit_on or "train",
                               pool_sample=project["pool_sample"], inputs=inp, **options)
    except UserError:
        if fit_on:
            raise
        return None     # e.g. too few labelled images for UMAP: the view opens after the next phase


def _placed(run_dir, network):
    arrays, meta = results.load_result(run_dir, network, "projection")
    return arrays["image_ids"], arrays["coords"], arrays["in_fit"], meta


def _place(run_dir, network, model, placed, part, sha_of):
    """Place the images of ``part`` that have features in the fitted view; store the projection."""
    ids, coords, in_fit, meta = placed
    key = features.resolve_backbone(network).cache_key()
    with FeatureStore(run_dir) as cache:
        vectors = cache.vectors(key, [sha_of[int(i)] for i in part])
    new = np.array(sorted(int(i) for i in part if sha_of[int(i)] in vectors), dtype=np.int64)
    if not len(new):
        return placed
    t0 = time.perf_counter()
    new_coords = model.transform(np.stack([vectors[sha_of[int(i)]] for i in new]).astype(np.float32))
    ids, coords = np.concatenate([ids, new]), np.concatenate([coords, new_coords.astype(coords.dtype)])
    in_fit = np.concatenate([in_fit, np.zeros(len(new), bool)])
    order = np.argsort(ids, kind="stable")      # id order, as every other result
    ids, coords, in_fit = ids[order], coords[order], in_fit[order]
    meta = dict(meta, n_transformed=int(meta["n_transformed"] + len(new)),
                seconds_transform=round(meta["seconds_transform"] + time.perf_counter() - t0, 3))
    results.save_result(run_dir, network, "projection", {"image_ids": ids, "coords": coords, "in_fit": in_fit}, meta)
    return ids, coords, in_fit, meta


def _summary(fitted, placed, roles):
    """The project step's result for the streamed projection (None when nothing was fitted)."""
    if fitted is None or placed is None:
        return None
    placed_ids, _, in_fit, meta = placed
    n_fit = int(in_fit.sum())
    note = (f"fitted on {n_fit} images ({meta['fit_on']}) while the others were embedded; "
            f"{len(placed_ids) - n_fit} placed by transform as they came")
    return dict(fitted, images=int(len(roles)), roles={r: int((roles == r).sum()) for r in ("train", "test", "pool")},
                fitted=n_fit, transformed=int(len(placed_ids) - n_fit), seconds_transform=meta["seconds_transform"],
                notes=[note], streamed=True)
