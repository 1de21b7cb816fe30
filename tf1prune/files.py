"""Reading and writing files: protobufs (never modified), atomic writes."""
import os

import tensorflow.compat.v1 as tf
from google.protobuf import message, text_format

from tf1prune.errors import Tf1PruneError


def read_proto(path, proto_class, what, text_first=False, valid=lambda proto: proto.ByteSize()):
    """Parse a binary or text protobuf file; None when neither parses into a ``valid`` message."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Tf1PruneError("cannot read %s %r: %s" % (what, path, e.strerror or e))
    for as_text in ((True, False) if text_first else (False, True)):
        proto = proto_class()
        try:
            if as_text:
                text_format.Merge(data.decode("utf-8"), proto)
            else:
                proto.ParseFromString(data)
            if valid(proto):
                return proto
        except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError):
            pass
    return None


def load_graph_def(path):
    """Read a binary ``.pb`` or text ``.pbtxt`` GraphDef; never modifies the file.

    Example::

        graph_def = tf1prune.load_graph_def("model.pb")
    """
    graph_def = read_proto(path, tf.GraphDef, "graph", path.endswith((".pbtxt", ".txt")), lambda g: g.node)
    if graph_def is None:
        raise Tf1PruneError("%r is not a valid GraphDef (binary .pb or text .pbtxt)" % path)
    return graph_def


def save_graph_def(graph_def, path, as_text=None):
    """Write atomically (temp file + rename); text format for ``.pbtxt``."""
    if as_text is None:
        as_text = path.endswith((".pbtxt", ".txt"))
    data = text_format.MessageToString(graph_def).encode() if as_text else graph_def.SerializeToString()
    atomic_write(path, data)


def atomic_write(path, data):
    """Write ``data`` (str or bytes) to ``path`` through a temporary file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.tmp%d" % (os.path.basename(path), os.getpid()))
    mode = "w" if isinstance(data, str) else "wb"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
