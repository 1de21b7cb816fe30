"""Test setup: the repo and tests/ on sys.path, TF1 graph mode, the ``slow`` marker.

Tests are grouped by stage (core, choose, apply, workflows, cli, examples); modules shared between
them (helpers, architectures, sessions) live in tests/."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]   # the repo (tf1prune, example_models) and the shared test modules

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_eager_execution()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the full suite only; the fast tier is -m 'not slow'")


def pytest_sessionstart(session):
    """Pin ``channel_divisible="auto"`` (the CLI default) to 1 for the suite: figures asserted by the
    tests must not depend on the test machine's kernels; results cached in a folder of the run's own.
    tests/choose/test_divisible.py covers auto itself."""
    import tempfile
    os.environ["TF1PRUNE_CACHE"] = tempfile.mkdtemp(prefix="tf1prune-cache-")
    os.environ["TF1PRUNE_CHANNEL_DIVISIBLE"] = "1"
