"""Named blocks found in an analysed graph.

- ``inverted_residual``: [1x1 expand conv] -> depthwise conv -> 1x1 project conv
  [-> residual add]; its internal group is the depthwise's channels.
- ``squeeze_excitation``: global pool -> reduce (conv/dense) -> act -> expand
  (conv/dense) -> gate (sigmoid / hard-sigmoid) -> Mul with the features; its
  internal group is the reduce layer's output.

Pruning a block's internal group never changes the block's output width.
"""
import collections

from tf1prune.graph import node_of

LAYER_OPS = ("Conv2D", "MatMul")
PER_CHANNEL = ("BiasAdd Relu Relu6 Elu Selu LeakyRelu Sigmoid Tanh Softplus Identity IdentityN Snapshot "
               "FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 Add AddV2 Sub Mul RealDiv Maximum Minimum "
               "Pad MirrorPad Reshape Squeeze ExpandDims Cast").split()


class Block(collections.namedtuple("Block", "type nodes group")):
    def to_dict(self):
        return {"type": self.type, "nodes": list(self.nodes), "group": self.group}


def _walk_back(analysis, tensor, stop_ops, limit=24):
    """First producer of ``stop_ops`` upstream of ``tensor`` through per-channel ops."""
    view = analysis.view
    for _ in range(limit):
        node = view.nodes.get(node_of(tensor))
        if node is None:
            return None
        if node.op in stop_ops:
            return node
        if node.op not in PER_CHANNEL:
            return None
        ins = [t for t in view.data_inputs(node.name) if analysis.tensor_info(t) is not None]
        if not ins:
            return None
        tensor = ins[0]
    return None


def _walk_forward(analysis, tensor, stop_ops, limit=24):
    """First consumer of ``stop_ops`` downstream of ``tensor``, keeping the tensor's shape."""
    view = analysis.view
    shape = view.shape(tensor)
    for _ in range(limit):
        nxt = None
        for name, _i in view.consumers.get(node_of(tensor), []):
            node = view.nodes[name]
            if node.op in stop_ops:
                return node
            if node.op in PER_CHANNEL and view.shape(name + ":0") == shape and name in view.reachable:
                nxt = name
        if nxt is None:
            return None
        tensor = nxt + ":0"
    return None


def _kernel_is_1x1(analysis, node):
    ks = analysis.view.shape(analysis.view.data_inputs(node.name)[1])
    return ks is not None and ks[:2] == [1, 1]


def _group_of(analysis, tensor):
    inf = analysis.tensor_info(tensor)
    if inf is None or not len(inf.elems):
        return None
    return analysis.group_of_unit.get(int(analysis.unit_of[inf.elems[0]]))


def _se_block(analysis, node):
    view = analysis.view
    ins = [t for t in view.data_inputs(node.name)]
    if len(ins) != 2 or any(analysis.tensor_info(t) is None for t in ins):
        return None
    shapes = [view.shape(t) for t in ins]
    if None in shapes or len(shapes[0]) != 4 or len(shapes[1]) != 4:
        return None
    squeezed = [s[1] * s[2] == 1 for s in shapes]
    if not any(squeezed):
        return None
    for k in (0, 1):   # at 1x1 resolution both inputs are squeezed: the gate is the one that fits
        if not squeezed[k]:
            continue
        expand = _walk_back(analysis, ins[k], LAYER_OPS)
        reduce_ = expand and _walk_back(analysis, view.data_inputs(expand.name)[0], LAYER_OPS)
        pool = reduce_ and _walk_back(analysis, view.data_inputs(reduce_.name)[0], ("Mean", "AvgPool"))
        if pool is None:
            continue
        if all(squeezed) and node_of(view.data_inputs(pool.name)[0]) != node_of(ins[1 - k]):
            continue
        return Block("squeeze_excitation", [pool.name, reduce_.name, expand.name, node.name],
                     _group_of(analysis, reduce_.name + ":0"))
    return None


def _inverted_residual(analysis, node):
    view = analysis.view
    x = view.data_inputs(node.name)[0]
    expand = _walk_back(analysis, x, LAYER_OPS + ("DepthwiseConv2dNative",))
    if expand is not None and (expand.op != "Conv2D" or not _kernel_is_1x1(analysis, expand)):
        expand = None
    project = _walk_forward(analysis, node.name + ":0", ("Conv2D",))
    if project is None or not _kernel_is_1x1(analysis, project):
        return None
    add = _walk_forward(analysis, project.name + ":0", ("Add", "AddV2"))
    nodes = ([expand.name] if expand is not None else []) + [node.name, project.name]
    if add is not None:
        block_in = view.data_inputs(expand.name if expand is not None else node.name)[0]
        add_ins = [node_of(t) for t in view.data_inputs(add.name)]
        if node_of(block_in) in add_ins:
            nodes.append(add.name)
    return Block("inverted_residual", nodes, _group_of(analysis, node.name + ":0"))


def find_blocks(analysis):
    blocks = []
    for name in analysis.view.order:
        node = analysis.view.nodes[name]
        block = None
        if node.op == "DepthwiseConv2dNative":
            block = _inverted_residual(analysis, node)
        elif node.op == "Mul":
            block = _se_block(analysis, node)
        if block is not None:
            blocks.append(block)
    return blocks
