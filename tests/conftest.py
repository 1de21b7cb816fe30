"""Test setup: the repo and tests/ on sys.path, TF1 graph mode, the ``slow`` marker.

Tests are grouped by stage (core, choose, apply, workflows, cli, examples); modules shared between
them (helpers, architectures, sessions) live in tests/."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]   # the repo (tf1prune, example_models) and the shared test modules

import pytest  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_eager_execution()


@pytest.fixture(scope="module")
def fixed_batch_pb(tmp_path_factory):
    """A frozen conv/BN/dense graph whose input ``x`` has a fixed batch of 1 (output ``logits``): its path
    and folder."""
    from graphs import fixed_batch_graph
    from tf1prune.files import save_graph_def
    d = tmp_path_factory.mktemp("fixed")
    path = str(d / "fixed.pb")
    save_graph_def(fixed_batch_graph(), path)
    return path, d


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the full suite only; the fast tier is -m 'not slow'")


def pytest_sessionstart(session):
    """Pin ``channel_divisible="auto"`` (the CLI default) to 1 for the suite: figures asserted by the
    tests must not depend on the test machine's kernels; results cached in a folder of the run's own.
    tests/choose/test_divisible.py covers auto itself."""
    import tempfile
    os.environ["TF1PRUNE_CACHE"] = tempfile.mkdtemp(prefix="tf1prune-cache-")
    os.environ["TF1PRUNE_CHANNEL_DIVISIBLE"] = "1"
