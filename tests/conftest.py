"""Shared test setup: every test run keeps its exported engines and user networks in one temp home."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# One NIPGBOARD_HOME for the whole run, set before anything imports the package, so ONNX exports
# are made once per run and never touch the user's own ~/.nipgboard.
_HOME = tempfile.mkdtemp(prefix="nipgboard-home-")
os.environ["NIPGBOARD_HOME"] = _HOME


pytest_plugins = ["pipeline_fixtures"]


@pytest.fixture(scope="session")
def nipgboard_home():
    return Path(_HOME)
