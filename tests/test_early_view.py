"""The first picture early: the pipeline embeds the labelled images first, fits the view on them, and
places the others as they are embedded (``nipgboard_plugin/streaming.py``), on real digit images."""
import numpy as np
import pytest
from PIL import Image

from nipgboard_plugin import results
from nipgboard_plugin.errors import Cancelled
from nipgboard_plugin.projection import fit_set_mask, project_dataset
from nipgboard_plugin.run import Run
from nipgboard_plugin.steps import Context, get
from nipgboard_plugin.store import Store
from nipgboard_plugin.streaming import CHUNKS, plan
from pipeline_fixtures import _build

NETWORK = "efficientnet_lite0"


@pytest.fixture
def digits_unembedded(tmp_path):
    """240 handwritten digits (0, 1, 4, 7) as PNGs, 80 labelled, no features yet."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.flatnonzero(np.isin(d.target, [0, 1, 4, 7]))
    rng = np.random.default_rng(1)
    chosen = np.concatenate([rng.choice(keep[d.target[keep] == c], 60, replace=False) for c in (0, 1, 4, 7)])
    imgs = [np.array(Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((32, 32)))
            for i in chosen]
    mask = np.zeros(len(chosen), bool)
    mask[rng.permutation(len(chosen))[:80]] = True
    return _build(tmp_path, imgs, [f"digit{d.target[i]}" for i in chosen], mask, networks=())


class Recorder(Context):
    """Records stages and, at every preview, how many images the stored projection places."""

    def __init__(self, run_dir, on_preview=None, stop_after=None):
        self.run_dir, self.on_preview, self.stop_after = run_dir, on_preview, stop_after
        self.stages, self.previews = [], []

    def stage(self, name, total=None, message=None):
        self.current_stage = name
        self.stages.append(name)

    def preview(self, info):
        coords, _ = Run(self.run_dir).points(info["network"])
        self.previews.append(dict(info, finite=int(np.isfinite(coords[:, 0]).sum())))
        if self.on_preview:
            self.on_preview(len(self.previews))

    def should_stop(self):
        return self.stop_after is not None and len(self.previews) >= self.stop_after


def _pipeline(run_dir, ctx, **project):
    step = get("pipeline")
    p = step.clean({"network": NETWORK, "early_view": 1, "options": {"project": dict(project)}}, run_dir, face="job")
    return step.run(ctx, run_dir, p)


def test_plan_orders_train_then_the_fit_set_then_the_rest_in_chunks():
    roles = np.array(["train"] * 30 + ["test"] * 10 + ["pool"] * 4000, dtype=object)
    ids = np.arange(100, 100 + len(roles))
    project = {"mode": "supervised", "method": "umap", "fit_on": None, "pool_sample": 500, "random_state": 0}
    phases, fit_mask, fit_on = plan(ids, roles, project)
    assert fit_on == "train+sample"
    assert np.array_equal(fit_mask, fit_set_mask(roles, "supervised", None, 500, 0)[0])
    assert phases[0][1].tolist() == ids[:30].tolist()                      # the train images first
    second = set(phases[1][1].tolist())
    assert second == set(ids[30:40].tolist()) | set(ids[fit_mask & (roles == "pool")].tolist())
    rest = np.concatenate([part for _, part in phases[2:]])
    assert len(phases) - 2 == CHUNKS
    assert sorted(rest.tolist()) == sorted(set(ids.tolist()) - set(ids[:40].tolist()) - second)
    assert rest.tolist() != sorted(rest.tolist())      # shuffled: a folder per class arrives mixed


def test_the_view_opens_on_the_labelled_images_and_grows_to_every_image(digits_unembedded):
    run_dir = digits_unembedded["logdir"]
    ctx = Recorder(run_dir)
    r = _pipeline(run_dir, ctx, fit_on="train+sample", pool_sample=40)
    with Store(run_dir) as store:
        n_train = sum(1 for i in store.labels() if store.splits().get(i) != "test")
    first = ctx.previews[0]
    assert first["phase"] == "labelled images" and first["placed"] == first["finite"] == n_train
    placed = [p["placed"] for p in ctx.previews]
    assert placed == sorted(placed) and placed[-1] == 240 == ctx.previews[-1]["finite"]
    assert len(ctx.previews) >= 3          # the first look, the final fit, and at least one chunk after it
    assert [p["finite"] for p in ctx.previews] == placed
    # the embed stage said which images it was on
    assert any("extracting features (local, cpu): labelled images" in s for s in ctx.stages)
    project = r["steps"]["project"]
    assert project["streamed"] and project["fit_on"] == "train+sample"
    assert project["fitted"] == n_train + 40 and project["transformed"] == 240 - n_train - 40
    embedded = r["steps"]["embed"]
    assert embedded["extracted"] == 240 and r["steps"]["cluster"] and r["steps"]["predict"]
    assert 0 < embedded["seconds_placing"] < embedded["seconds"]      # the fits ran during the extraction
    assert f"{embedded['seconds_placing']} s of them fitting and placing the view" in get("embed").render(embedded)

    # The streamed fit is the project step's own fit: the same images, the same coordinates.
    arrays, _ = results.load_result(run_dir, NETWORK, "projection")
    again = project_dataset(run_dir, NETWORK, fit_on="train+sample", pool_sample=40)
    arrays2, _ = results.load_result(run_dir, NETWORK, "projection")
    assert again["fitted"] == project["fitted"]
    assert np.array_equal(arrays["image_ids"], arrays2["image_ids"])
    assert np.array_equal(arrays["in_fit"], arrays2["in_fit"])
    np.testing.assert_allclose(arrays["coords"][arrays["in_fit"]], arrays2["coords"][arrays2["in_fit"]], atol=1e-4)


def test_labels_added_while_embedding_make_the_project_step_fit_again(digits_unembedded):
    run_dir = digits_unembedded["logdir"]

    def label_one(n):
        if n == 1:      # the expert labels an unlabelled image while the others are embedded
            with Store(run_dir) as store:
                pool = sorted(set(i for (i,) in store.image_rows("id")) - set(store.labels()))
            Run(run_dir).set_labels([(pool[0], "digit0")])

    ctx = Recorder(run_dir, on_preview=label_one)
    r = _pipeline(run_dir, ctx, fit_on="train+sample", pool_sample=40)
    assert "streamed" not in r["steps"]["project"]          # fitted again by the project step
    assert any(s.startswith("2/4 project") for s in ctx.stages)
    _, meta = results.load_result(run_dir, NETWORK, "projection")
    assert meta["n_fit"] + meta["n_transformed"] == 240


def test_a_cancel_while_streaming_keeps_what_was_embedded(digits_unembedded):
    run_dir = digits_unembedded["logdir"]
    ctx = Recorder(run_dir, stop_after=1)
    with pytest.raises(Cancelled):
        _pipeline(run_dir, ctx, fit_on="train+sample", pool_sample=40)
    from nipgboard_plugin.streaming import missing_count

    left = missing_count(run_dir, NETWORK)
    assert 0 < left < 240 - ctx.previews[0]["placed"] + 1
    r = _pipeline(run_dir, Recorder(run_dir), fit_on="train+sample", pool_sample=40)
    assert r["steps"]["embed"]["extracted"] == left
    assert Run(run_dir).points(NETWORK)[0].shape[0] == 240


def test_a_running_jobs_preview_is_its_result_until_it_ends(tmp_path):
    from nipgboard_plugin.jobs.store import JobStore

    store = JobStore(tmp_path, create=True)
    job = store.submit("pipeline", {"network": NETWORK})["id"]
    store.running_result(job, {"preview": {"placed": 5}})
    assert store.get(job)["result"] is None                 # not running yet: nothing to show
    assert store.claim(job, 1)
    store.running_result(job, {"preview": {"placed": 5}})
    assert store.get(job)["result"] == {"preview": {"placed": 5}}
    store.finish(job, "done", result={"network": NETWORK})
    store.running_result(job, {"preview": {"placed": 9}})
    assert store.get(job)["result"] == {"network": NETWORK}
