"""NodeDef builders and Const access used by the rewrites and appliers.

TensorFlow is imported when a function runs, so importing the rules loads no TensorFlow.
"""
import numpy as np


def _tf():
    import tensorflow.compat.v1 as tf
    return tf


def const_value(node):
    """The value of a Const NodeDef."""
    return _tf().make_ndarray(node.attr["value"].tensor)


def set_const_value(node, value):
    """Replace a Const NodeDef's value, keeping its dtype."""
    tf = _tf()
    dtype = tf.as_dtype(node.attr["dtype"].type)
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, dtype=dtype.as_numpy_dtype),
                                                            dtype=dtype))


def const_bytes(node):
    """A Const NodeDef's value as bytes, for :func:`restore_const`."""
    return node.attr["value"].tensor.SerializeToString()


def restore_const(node, data):
    """Put back the value :func:`const_bytes` saved (byte for byte)."""
    node.attr["value"].tensor.ParseFromString(data)


def const_node(name, value, dtype=None):
    """A Const NodeDef (int32 by default)."""
    tf = _tf()
    dtype = dtype or tf.int32
    node = tf.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = dtype.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, dtype.as_numpy_dtype), dtype=dtype))
    return node


def placeholder_node(name, dtype, shape):
    """A Placeholder NodeDef of ``dtype`` (a tf.DType) and ``shape`` (a list)."""
    tf = _tf()
    node = tf.NodeDef(name=name, op="Placeholder")
    node.attr["dtype"].type = dtype.as_datatype_enum
    node.attr["shape"].shape.CopyFrom(tf.TensorShape(shape).as_proto())
    return node


def gather_nodes(name, params, indices, axis, dtype_enum):
    """NodeDefs computing ``tf.gather(params, indices, axis=axis)``; the last one is the result."""
    tf = _tf()
    index, where = const_node(name + "/indices", indices), const_node(name + "/axis", axis)
    gather = tf.NodeDef(name=name, op="GatherV2", input=[params, index.name, where.name])
    gather.attr["Tparams"].type = dtype_enum
    gather.attr["Tindices"].type = tf.int32.as_datatype_enum
    gather.attr["Taxis"].type = tf.int32.as_datatype_enum
    return [index, where, gather]


def dtype_enum(name):
    """The DataType enum of a dtype name (``'int32'``)."""
    return _tf().as_dtype(name).as_datatype_enum


def op_node(name, op, inputs, types=None, **values):
    """A NodeDef of ``op``: ``types`` maps attributes to DataType enums, ``values`` sets bool, int,
    float or string attributes."""
    node = _tf().NodeDef(name=name, op=op, input=list(inputs))
    for key, enum in (types or {}).items():
        node.attr[key].type = enum
    for key, value in values.items():
        if isinstance(value, bool):
            node.attr[key].b = value
        elif isinstance(value, int):
            node.attr[key].i = value
        elif isinstance(value, float):
            node.attr[key].f = value
        else:
            node.attr[key].s = value.encode()
    return node
