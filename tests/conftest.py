"""Test setup: repo root on sys.path, TF1 graph mode, the ``slow`` marker."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_eager_execution()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the full suite only; the fast tier is -m 'not slow'")


def pytest_sessionstart(session):
    """Pin ``channel_divisible="auto"`` (the CLI default) to 1 for the suite: figures asserted by the
    tests must not depend on the test machine's kernels.  tests/test_divisible.py covers auto itself."""
    import json
    import tempfile
    from tf1prune import divisible
    folder = tempfile.mkdtemp(prefix="tf1prune-cache-")
    os.environ["TF1PRUNE_CACHE"] = folder
    with open(divisible.cache_path(), "w") as f:
        json.dump({divisible._machine(0): {"choice": 1, "throughput": {}, "measured": "pinned by tests"}}, f)
