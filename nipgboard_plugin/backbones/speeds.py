"""Measured feature-extraction speed (images/s) per machine, network and device.

``embed`` records its rate when it has extracted enough images for the figure to mean something
(:data:`MIN_IMAGES`); ``nipgboard networks``, ``/networks`` and the panel show the latest one for
this machine. The file (:func:`..paths.speeds_file`) is small JSON, rewritten atomically:
``{"machines": {HOST: {NETWORK: {DEVICE: {"images_per_s", "images", "batch_size", "measured_at"}}}}}``.
"""
import json
import socket
import time

from .. import atomic, paths

MIN_IMAGES = 64


def machine() -> str:
    return socket.gethostname() or "localhost"


def _load() -> dict:
    try:
        data = json.loads(paths.speeds_file().read_text())
        return data if isinstance(data, dict) and isinstance(data.get("machines"), dict) else {"machines": {}}
    except (OSError, ValueError):
        return {"machines": {}}


def record(network_id, device, images, seconds, batch_size=None) -> bool:
    """Keep ``images`` / ``seconds`` as the network's speed on ``device`` here; False when too few to tell."""
    if not device or images < MIN_IMAGES or seconds <= 0:
        return False
    data = _load()
    nets = data["machines"].setdefault(machine(), {})
    nets.setdefault(str(network_id), {})[str(device)] = {
        "images_per_s": round(images / seconds, 2), "images": int(images), "batch_size": batch_size,
        "measured_at": round(time.time(), 1)}
    try:
        atomic.write_text(paths.speeds_file(), json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        return False  # a read-only home must not fail the embed that measured it
    return True


def record_embed(result, progress, batch_size=None) -> bool:
    """Record from an ``embed`` result and its last ``features.Progress`` (None: nothing was extracted).

    The progress's clock starts with the first batch, so loading or exporting the network is not counted.
    """
    if progress is None or not isinstance(result, dict):
        return False
    return record(result.get("network"), result.get("device") or result.get("engine"),
                  result.get("extracted", 0), progress.seconds, batch_size)


def measured_all() -> dict:
    """{network: {device: images/s}} measured on this machine."""
    nets = _load()["machines"].get(machine(), {})
    return {net: {dev: v["images_per_s"] for dev, v in devs.items() if isinstance(v, dict) and "images_per_s" in v}
            for net, devs in nets.items() if isinstance(devs, dict)}


def measured(network_id) -> dict:
    """{device: images/s} measured on this machine for the network ({} when never measured)."""
    return measured_all().get(str(network_id), {})
