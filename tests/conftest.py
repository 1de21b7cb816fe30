"""Test setup: repo root on sys.path, TF1 graph mode, the ``slow`` marker."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_eager_execution()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: the full suite only; the fast tier is -m 'not slow'")
