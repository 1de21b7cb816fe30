"""``tools/ofa_example.py`` end to end on a few hundred images: it trains, searches and exports."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import tf1prune
from tf1prune.files import load_graph_def

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ofa_example_exports_a_slim_network_at_the_target(tmp_path):
    out = str(tmp_path / "ofa")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "examples", "ofa_example.py"), "--train_images", "512",
                           "--val_size", "256", "--epochs", "1", "--ofa_epochs", "1", "--population", "4",
                           "--generations", "1", "--targets", "0.5", "--output_dir", out],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {m.group(1): (int(m.group(2)), int(m.group(3)), float(m.group(4)))
            for m in re.finditer(r"^(original|50% fewer MACs) +(\d+) +(\d+) +([\d.]+) +[\d.]+$", proc.stdout, re.M)}
    assert set(rows) == {"original", "50% fewer MACs"}, proc.stdout
    (full, full_params, _), (macs, params, acc) = rows["original"], rows["50% fewer MACs"]
    assert 0.49 * full <= macs <= 0.51 * full and params < full_params and 0.0 <= acc <= 1.0
    assert "4 sandwich steps (4 sub-networks each)" in proc.stdout   # 512 images, batches of 128

    # the exported graph is the one in the table, and its checkpoint holds the same slim weights
    slim = load_graph_def(os.path.join(out, "macs50", "slim.pb"))
    counted = tf1prune.count_macs(tf1prune.analyze(slim, {"input_1:0": ((1, 28, 28, 1), "float32")},
                                                   ["logits/BiasAdd"]))
    assert (counted.macs, counted.params) == (macs, params)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(out, "macs50", "checkpoint")))
    consts = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in slim.node if n.op == "Const"}
    kernels = [k for k in reader.get_variable_to_shape_map() if k.endswith("kernel") and k in consts]
    assert kernels and all(np.array_equal(reader.get_tensor(k), consts[k]) for k in kernels)

    with open(os.path.join(out, "macs50.ofa_search.json")) as f:
        search = json.load(f)
    assert search["kind"] == "ofa-search"
    assert any(s["macs"] == macs for s in search["extra"]["front"])
