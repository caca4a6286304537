"""Where NIPGBoard keeps its files: every location is defined here.

A dataset lives in one directory, its *run directory* (a TensorBoard run): ``<run>/nipgboard/``
holds the SQLite databases (dataset, feature cache, jobs), the per-network results, thumbnails,
sprite atlases, converted images, exports and the Projector tab's assets. Exported ONNX engines and
user-registered networks are shared between datasets under ``NIPGBOARD_HOME`` (default
``~/.nipgboard``). Every function takes the run directory, never TensorBoard's logdir.
"""
import os
import re
from pathlib import Path

from .errors import InvalidParameter

DATA_DIRNAME = "nipgboard"
DB_FILENAME = "dataset.sqlite"
FEATURES_FILENAME = "features.sqlite"
JOBS_FILENAME = "jobs.sqlite"
RESULTS_DIRNAME = "results"
PROJECTOR_CONFIG = "projector_config.pbtxt"


def data_dir(run_dir) -> Path:
    return Path(run_dir) / DATA_DIRNAME


def db_path(run_dir) -> Path:
    return data_dir(run_dir) / DB_FILENAME


def features_path(run_dir) -> Path:
    return data_dir(run_dir) / FEATURES_FILENAME


def jobs_db_path(run_dir) -> Path:
    return data_dir(run_dir) / JOBS_FILENAME


def is_dataset(run_dir) -> bool:
    return db_path(run_dir).is_file()


def is_run(run_dir) -> bool:
    """A dataset, or a folder whose first ingest is queued or running (it has only a job database)."""
    return is_dataset(run_dir) or jobs_db_path(run_dir).is_file()


# -- per-network results ------------------------------------------------------------------------------
def results_dir(run_dir) -> Path:
    return data_dir(run_dir) / RESULTS_DIRNAME


def network_dir(run_dir, network_id) -> Path:
    if not network_id or not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(network_id)) or network_id in (".", ".."):
        raise InvalidParameter(f"Invalid network id {network_id!r}: use letters, digits, '_', '-' and '.'.")
    return results_dir(run_dir) / str(network_id)


def result_path(run_dir, network_id, kind) -> Path:
    return network_dir(run_dir, network_id) / f"{kind}.npz"


def model_path(run_dir, network_id) -> Path:
    return network_dir(run_dir, network_id) / "projection.model.pkl"


def search_report_path(run_dir, network_id) -> Path:
    return network_dir(run_dir, network_id) / "search.json"


# -- pictures, exports, the Projector tab -----------------------------------------------------------------
def thumbs_dir(run_dir) -> Path:
    return data_dir(run_dir) / "thumbs"


def sprites_dir(run_dir) -> Path:
    return data_dir(run_dir) / "sprites"


def converted_dir(run_dir) -> Path:
    """Full images converted to PNG for browsers that cannot show their format."""
    return data_dir(run_dir) / "converted"


def exports_dir(run_dir) -> Path:
    return data_dir(run_dir) / "exports"


def export_path(run_dir) -> Path:
    """Where the ``export`` job writes the run's labels CSV."""
    return exports_dir(run_dir) / "labels.csv"


def projector_assets_dir(run_dir) -> Path:
    return data_dir(run_dir) / "projector"


def projector_config_path(run_dir) -> Path:
    return Path(run_dir) / PROJECTOR_CONFIG


# -- shared between datasets -------------------------------------------------------------------------------
def home() -> Path:
    return Path(os.environ.get("NIPGBOARD_HOME") or Path.home() / ".nipgboard")


def engines_dir() -> Path:
    return home() / "engines"


def user_networks_file() -> Path:
    return home() / "networks.json"


def models_dir() -> Path:
    """Model folders the user put here by hand (``models/<owner>/<name>/``, e.g. facebook/dinov2-small)."""
    return home() / "models"


def text_features_dir() -> Path:
    """Cached text embeddings of the zero-shot prompts, one file per network and weights."""
    return home() / "text-features"


def speeds_file() -> Path:
    """Measured images/s per machine, network and device (written when an embed finishes)."""
    return home() / "speeds.json"
