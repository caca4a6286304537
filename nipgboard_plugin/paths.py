"""Where NIPGBoard keeps its files.

A dataset lives in one directory (a TensorBoard run): ``<run>/nipgboard/``
holds the SQLite database and the feature cache. Exported ONNX engines and
user-registered networks are shared between datasets under ``NIPGBOARD_HOME``
(default ``~/.nipgboard``).
"""
import os
from pathlib import Path

DATA_DIRNAME = "nipgboard"
DB_FILENAME = "dataset.sqlite"
FEATURES_FILENAME = "features.sqlite"


def data_dir(logdir) -> Path:
    return Path(logdir) / DATA_DIRNAME


def db_path(logdir) -> Path:
    return data_dir(logdir) / DB_FILENAME


def features_path(logdir) -> Path:
    return data_dir(logdir) / FEATURES_FILENAME


def is_dataset(logdir) -> bool:
    return db_path(logdir).is_file()


def home() -> Path:
    return Path(os.environ.get("NIPGBOARD_HOME") or Path.home() / ".nipgboard")


def engines_dir() -> Path:
    return home() / "engines"


def user_networks_file() -> Path:
    return home() / "networks.json"
