"""Fashion-MNIST from Debian's ``dataset-fashion-mnist``, or a small shipped subset.

``load()`` returns ``(x_train, y_train, x_test, y_test, source)`` with images as
float32 in [0, 1] of shape (N, 28, 28, 1) and int labels.
"""
import gzip
import os

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "fashion_mnist_small.npz")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load(directory=DEBIAN_DIR):
    paths = [os.path.join(directory, f) for f in FILES]
    if all(os.path.exists(p) for p in paths):
        x_train, x_test = (_idx(p, 16).reshape(-1, 28, 28) for p in paths[0::2])
        y_train, y_test = (_idx(p, 8) for p in paths[1::2])
        source = "Fashion-MNIST (%s, %d train / %d test)" % (directory, len(y_train), len(y_test))
    else:
        d = np.load(SHIPPED)
        x_train, y_train, x_test, y_test = d["x_train"], d["y_train"], d["x_test"], d["y_test"]
        source = ("shipped Fashion-MNIST subset (%d train / %d test): install Debian's "
                  "dataset-fashion-mnist for the full set" % (len(y_train), len(y_test)))
    prep = lambda x: (x.astype(np.float32) / 255.0)[..., None]
    return prep(x_train), y_train.astype(np.int64), prep(x_test), y_test.astype(np.int64), source
