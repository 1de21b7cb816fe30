"""Hand a slim graph to TFLite: convert it with TensorFlow's own TF1 converter and check that the
TFLite model computes what TensorFlow computes.

Example::

    result = to_tflite(slim_gd, {"input:0": ((1, 224, 224, 3), "float32")}, ["logits"])
    atomic_write("slim.tflite", result.model)
    print(result.max_diff)
"""
import collections
import contextlib
import os
import re
import tempfile
import warnings

import numpy as np

from tf1prune.core.graph import example_input
from tf1prune.core.names import node_of, tensor_name
from tf1prune.errors import Tf1PruneError, tf_error_line

TfliteModel = collections.namedtuple("TfliteModel", "model max_diff outputs")
TfliteModel.__doc__ = ("``model``: the .tflite bytes; ``max_diff``: the largest absolute difference between TFLite's "
                       "and TensorFlow's outputs on random inputs; ``outputs``: output name -> its max difference.")

_OP = re.compile(r"'tf\.(\w+)' op (.*?)(?:\n|$)")
_LOC = re.compile(r'loc\(fused\["[^"]*", "([^"]+)"\]\)|loc\("([^"]+)"\)')


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the converter's and interpreter's C++ logging (file descriptor 2) while inside."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def convert_error(error):
    """One line naming the op TFLite could not take (and its node), from a converter error."""
    text = str(error)
    found = _OP.search(text)
    if found:
        loc = _LOC.search(text[:found.start()].rsplit("\n", 1)[-1]) or _LOC.search(text)
        node = next((g for g in loc.groups() if g), None) if loc else None
        return "op %s%s %s" % (found.group(1), " (node %r)" % node if node else "", found.group(2).strip())
    lines = [re.sub(r"^<unknown>:0: error: (loc\([^)]*\)\)?: )?", "", l).strip()
             for l in text.splitlines() if "error:" in l]
    return lines[0] if lines else tf_error_line(error)


def to_tflite(graph_def, input_specs, output_node_names, select_tf_ops=False, seed=0):
    """Convert ``graph_def`` (frozen) to TFLite with the inputs fixed to ``input_specs`` (default: the
    placeholders' shapes, batch 1), run both on the same random inputs and return a
    :class:`TfliteModel` (``max_diff`` None when no TFLite interpreter is installed).  ``select_tf_ops``: allow TensorFlow
    ops TFLite has no builtin for (the model then needs the Flex delegate).  A graph the converter
    refuses raises :class:`Tf1PruneError` naming the op."""
    import tensorflow.compat.v1 as tf
    from tf1prune.measure.latency import input_shapes
    outputs = [node_of(n) for n in output_node_names]
    specs = input_shapes(graph_def, input_specs, None, outputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "graph.pb")
        with open(path, "wb") as f:
            f.write(graph_def.SerializeToString())
        try:
            converter = tf.lite.TFLiteConverter.from_frozen_graph(
                path, [node_of(n) for n in specs], outputs, {node_of(n): list(s) for n, (s, _) in specs.items()})
            if select_tf_ops:
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            with _quiet_stderr():
                model = converter.convert()
        except Exception as e:   # the converter raises ConverterError, ValueError and others
            raise Tf1PruneError("TFLite cannot convert the graph: %s" % convert_error(e))
    rng = np.random.RandomState(seed)
    feeds = {name: example_input(shape, dtype, rng) for name, (shape, dtype) in specs.items()}
    want = _run_tf(graph_def, feeds, outputs)
    got = _run_tflite(model, feeds, outputs)
    if got is None:
        return TfliteModel(model, None, {})
    diffs = {name: float(np.max(np.abs(np.asarray(got[name], np.float64) - np.asarray(want[name], np.float64))))
             if np.size(want[name]) else 0.0 for name in outputs}
    return TfliteModel(model, max(diffs.values()) if diffs else 0.0, diffs)


def _run_tf(graph_def, feeds, outputs):
    import tensorflow.compat.v1 as tf
    from tf1prune.tfcompat import session_config
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph, config=session_config()) as sess:
        values = sess.run([tensor_name(o) for o in outputs], feeds)
    return dict(zip(outputs, values))


def _interpreter():
    """TensorFlow's TFLite interpreter, else LiteRT's (``ai_edge_litert``), else None."""
    import tensorflow.compat.v1 as tf
    found = getattr(getattr(tf, "lite", None), "Interpreter", None)
    if found is None:
        try:
            from ai_edge_litert.interpreter import Interpreter as found
        except ImportError:
            return None
    return found


def _run_tflite(model, feeds, outputs):
    """TFLite's outputs by name, or None when no interpreter is installed."""
    make = _interpreter()
    if make is None:
        return None
    try:
        with warnings.catch_warnings(), _quiet_stderr():     # TF 2.20+ announces the move to LiteRT
            warnings.simplefilter("ignore")
            interpreter = make(model_content=model)
            interpreter.allocate_tensors()
            by_name = {d["name"]: d for d in interpreter.get_input_details()}
            for i, (name, value) in enumerate(feeds.items()):
                detail = by_name.get(node_of(name)) or by_name.get(name) or interpreter.get_input_details()[i]
                interpreter.set_tensor(detail["index"], value.astype(detail["dtype"], copy=False))
            interpreter.invoke()
    except (RuntimeError, ValueError) as e:
        raise Tf1PruneError("the TFLite model does not run: %s" % tf_error_line(e))
    details = interpreter.get_output_details()
    by_name = {d["name"]: d for d in details}
    return {name: interpreter.get_tensor((by_name.get(name) or by_name.get(tensor_name(name)) or details[i])["index"])
            for i, name in enumerate(outputs)}
