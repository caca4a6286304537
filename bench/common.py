"""Helpers shared by the benchmarks: process-tree memory sampling and timing of CLI runs."""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _tree_pids(root_pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(cmd, **kwargs):
    """Run a command; return (seconds, peak RSS of its largest process in MB, peak RSS summed over
    its process tree in MB, CompletedProcess). Sampled every 0.1 s from /proc."""
    peak_single = peak_tree = 0.0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    stop = threading.Event()

    def sample():
        nonlocal peak_single, peak_tree
        while not stop.is_set():
            rss = [_rss_mb(p) for p in _tree_pids(proc.pid)]
            if rss:
                peak_single = max(peak_single, max(rss))
                peak_tree = max(peak_tree, sum(rss))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    t.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    t.join()
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{err[-3000:]}")
    return seconds, peak_single, peak_tree, done


def nipgboard_cmd(*args):
    return [sys.executable, "-m", "nipgboard_plugin.cli", *map(str, args)]
