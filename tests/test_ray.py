"""`embed --ray`: extraction on a real two-node Ray cluster, started with `ray start` as on real machines.

The cluster has a head node and a second node that joins it (one CPU each, Ray's files in a temporary
folder, token authentication on); the images are real Pillow-made files, the engine is ONNX Runtime on
a real network, and the features must equal the local path's. A worker killed mid-run must not leave a
missing or corrupt entry; an unreadable image is reported as locally; a bad address or a missing Ray
says so in seconds. Every Ray process started here is stopped by its process id afterwards.
"""
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from images import write_shapes
from nipgboard_plugin import backbones
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.errors import Unavailable
from nipgboard_plugin.feature_store import FeatureStore
from nipgboard_plugin.features import embed
from nipgboard_plugin.steps import Context, get

NET = "efficientnet_lite0"
REPO = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).parent / "ray"
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY or not RAY.exists(), reason="Ray is not installed (pip install -e .[ray])")
BROKEN = "circle/circle_003.png"  # readable when ingested, not any more when embedded


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*argv, env=None, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "nipgboard_plugin.cli", *map(str, argv), "--json"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


# -- the cluster's processes ------------------------------------------------------------------------------
def _processes():
    """{pid: (parent pid, command line, state)} of every process we can see."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                out[int(entry)] = (int(stat[1]), cmd, stat[0])
            except (OSError, IndexError, ValueError):
                pass
    return out


def cluster_pids(temp_dir, port):
    """Live processes of our cluster: those naming its folder or port, and all their descendants."""
    procs = _processes()
    port_re = re.compile(rf":{port}(?!\d)")
    todo = [pid for pid, (_, cmd, _) in procs.items()
            if pid != os.getpid() and (temp_dir in cmd or port_re.search(cmd))]
    found = set()
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += [child for child, (ppid, _, _) in procs.items() if ppid == pid]
    return {pid for pid in found if procs.get(pid, (0, "", "Z"))[2] != "Z"}  # zombies hold nothing


def stop_cluster(temp_dir, port):
    """Stop only our cluster's processes, by id (`ray stop` would stop every Ray on the machine)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 3.0)):
        for pid in cluster_pids(temp_dir, port):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while cluster_pids(temp_dir, port) and time.time() < deadline:
            time.sleep(0.2)
    return cluster_pids(temp_dir, port)


def infer_actor_pids(cluster):
    procs = _processes()
    return [pid for pid in cluster_pids(cluster["temp"], cluster["port"])
            if procs.get(pid, (0, ""))[1].startswith("ray::MapWorker(MapBatches(Infer))")]


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    port = free_port()
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **token)
    common = ["--num-cpus", "1", "--temp-dir", temp, "--object-store-memory", str(120 * 2 ** 20),
              "--disable-usage-stats"]
    try:
        for argv in ([RAY, "start", "--head", "--port", port, "--include-dashboard=false",
                      "--ray-client-server-port", free_port(), *common],
                     [RAY, "start", "--address", f"127.0.0.1:{port}", *common]):
            done = subprocess.run(list(map(str, argv)), env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        with pytest.MonkeyPatch.context() as mp:
            for name, value in token.items():
                mp.setenv(name, value)
            yield {"address": f"127.0.0.1:{port}", "env": env, "temp": temp, "port": port}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        left = stop_cluster(temp, port)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {sorted(left)}"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """48 shapes and one file that breaks after `init`; the local path's features as the reference."""
    base = tmp_path_factory.mktemp("ray")
    root = base / "images"
    write_shapes(root, per_class=16, size=64)
    reference = base / "local"
    ingest(reference, root)
    (root / BROKEN).write_bytes(b"this is no longer an image\n")
    local = embed(reference, NET)
    assert local["extracted"] == 47 and len(local["failed"]) == 1
    return {"root": root, "base": base, "local": local, "vectors": vectors(reference)}


def fresh_logdir(images, name):
    logdir = images["base"] / name
    shutil.copytree(images["base"] / "local", logdir)
    paths = logdir / "nipgboard" / "features.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(paths) + suffix).unlink(missing_ok=True)
    return logdir


def vectors(logdir):
    """{sha256: vector} of every image with features, checked to be whole (no corrupt entry)."""
    key = backbones.get(NET).cache_key()
    with FeatureStore(logdir) as cache:
        rows = cache.conn.execute("SELECT sha256, vec FROM features WHERE key=?", (key,)).fetchall()
    out = {sha: np.frombuffer(vec, dtype="<f4") for sha, vec in rows}
    assert all(v.shape == (1280,) and np.isfinite(v).all() for v in out.values())
    return out


def assert_same_features(got, want):
    assert set(got) == set(want)
    diff = max(float(np.abs(got[s] - want[s]).max()) for s in want)
    assert diff < 1e-5, diff


@needs_ray
def test_the_cluster_extracts_what_the_local_path_does(cluster, images):
    """Through the CLI, on two nodes: the same vectors, the same unreadable image, and where it ran."""
    logdir = fresh_logdir(images, "cli")
    rc, out, err = cli("embed", logdir, "--network", NET, "--batch-size", 8, "--ray", cluster["address"],
                       "--ray-workers", 2, env=cluster["env"])
    assert rc == 0, err[-3000:]
    assert out["where"] == f"Ray at {cluster['address']} with 2 workers"
    assert out["ray"]["nodes"] == 2 and out["ray"]["workers"] == 2 and out["ray"]["cpus"] == 2
    assert out["device"] == "cpu" and out["engine"] == "onnxruntime"
    assert out["extracted"] == 47 and out["failed"] == images["local"]["failed"]
    assert BROKEN in out["failed"][0] and "not an image" in out["failed"][0]
    assert_same_features(vectors(logdir), images["vectors"])
    # Resumable across both paths: nothing left to do, locally or on the cluster.
    assert embed(logdir, NET)["extracted"] == 0


class Recording(Context):
    """The step's context, as the job worker's: it records stages, and kills a worker at the first batch."""

    def __init__(self, cluster):
        self.cluster, self.stages, self.killed = cluster, [], []

    def stage(self, name, total=None, message=None):
        super().stage(name, total, message)
        self.stages.append(name)

    def progress(self, done, total=None, rate=None, eta=None, message=None, force=False, check_cancel=True):
        if done and not self.killed:
            pids = infer_actor_pids(self.cluster)
            assert pids, "no inference actor found"
            os.kill(pids[0], signal.SIGKILL)
            self.killed.append((pids[0], done, total))


@needs_ray
def test_a_worker_killed_mid_run_leaves_no_gap_and_no_corrupt_entry(cluster, images):
    logdir = fresh_logdir(images, "killed")
    ctx = Recording(cluster)
    params = get("embed").clean({"network": NET, "batch_size": 4, "ray_workers": 2}, face="web")
    os.environ["NIPGBOARD_RAY"] = cluster["address"]  # the server's setting, as --nipgboard_ray sets it
    try:
        result = get("embed").call(logdir, params, ctx)
    finally:
        del os.environ["NIPGBOARD_RAY"]
    (pid, done, total), = ctx.killed
    assert done < total and pid not in infer_actor_pids(cluster)
    assert result["extracted"] == 47 and result["failed"] == images["local"]["failed"]
    assert result["ray"]["workers_seen"] >= 2  # the killed actor and who took over its work
    assert any(s.startswith(f"extracting features (Ray at {cluster['address']} with 2 workers, cpu)")
               for s in ctx.stages), ctx.stages
    assert_same_features(vectors(logdir), images["vectors"])


@needs_ray
def test_stopped_on_the_cluster_and_finished_here(cluster, images):
    logdir = fresh_logdir(images, "stopped")
    first = embed(logdir, NET, batch_size=4, ray=cluster["address"], ray_workers=1, should_stop=lambda: True)
    assert first["stopped"] and 0 < first["extracted"] < 47
    rest = embed(logdir, NET)
    assert rest["where"] == "local" and rest["cached_before"] == first["extracted"]
    assert first["extracted"] + rest["extracted"] == 47
    assert_same_features(vectors(logdir), images["vectors"])


@needs_ray
def test_an_images_folder_the_nodes_cannot_read_is_named(cluster, tmp_path):
    write_shapes(tmp_path / "images", per_class=2, size=48)
    ingest(tmp_path / "log", tmp_path / "images")
    (tmp_path / "images").rename(tmp_path / "elsewhere")  # here as on a node that does not mount it
    with pytest.raises(Unavailable, match=r"images folder .*/images is not readable on the Ray node .*: every node"):
        embed(tmp_path / "log", NET, ray=cluster["address"])


@needs_ray
def test_a_bad_address_says_so_in_seconds_and_off_runs_here(images, tmp_path):
    logdir = fresh_logdir(images, "bad")
    bad = f"127.0.0.1:{free_port()}"
    t = time.time()
    rc, out, _ = cli("embed", logdir, "--network", NET, "--ray", bad)
    assert rc == 2 and time.time() - t < 30
    assert out["error"].startswith(f"cannot reach the Ray cluster at {bad}: ") and "ray start --head" in out["error"]
    # The server's setting is used when a call names no cluster; `--ray off` overrides it.
    env = dict(os.environ, NIPGBOARD_RAY=bad)
    rc, out, _ = cli("embed", logdir, "--network", NET, env=env)
    assert rc == 2 and bad in out["error"]
    rc, out, _ = cli("embed", logdir, "--network", NET, "--ray", "nonsense")
    assert rc == 2 and "expected 'local', 'auto', HOST:PORT" in out["error"]
    rc, out, err = cli("embed", logdir, "--network", NET, "--ray", "off", env=env)
    assert rc == 0, err[-2000:]
    assert out["where"] == "local" and out["ray"] is None and out["extracted"] == 47


def test_without_ray_the_message_says_what_to_install(images):
    logdir = fresh_logdir(images, "noray")
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` fails as if it were not installed
            "from nipgboard_plugin.cli import main; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code, "embed", str(logdir), "--network", NET, "--ray", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = json.loads(proc.stdout)["error"]
    assert "needs Ray" in error and "pip install 'nipgboard-plugin[ray]'" in error
