"""Named blocks found in an analysed graph.

- ``inverted_residual``: [1x1 expand conv] -> depthwise conv -> 1x1 project conv [-> residual
  add]; its internal group is the depthwise's channels.
- ``squeeze_excitation``: global pool -> reduce (conv/dense) -> act -> expand (conv/dense) -> gate
  -> multiplication with the features; its internal group is the reduce layer's output.

Blocks are found from the analysis' layers and channels: between the layers of a block, the
channels pass through ops that keep them one to one (BatchNorm, activations, padding, reshapes).
Pruning a block's internal group never changes the block's output width.
"""
import collections

import numpy as np

from tf1prune.core import rules
from tf1prune.core.names import node_of, static_size

LIMIT = 24   # ops walked between two layers of a block


class Block(collections.namedtuple("Block", "type nodes group")):
    def to_dict(self):
        return {"type": self.type, "nodes": list(self.nodes), "group": self.group}


class _Finder:
    def __init__(self, analysis):
        self.a, self.view = analysis, analysis.view
        self.layer_of = {layer.node: layer for layer in analysis.layers}

    def is_layer(self, node, kinds=("conv", "dense"), window=None):
        layer = self.layer_of.get(node.name)
        return layer is not None and layer.kind in kinds and (window is None or layer.window == window)

    def same_channels(self, tensor, other):
        a, b = self.a.tensor_info(tensor), self.a.tensor_info(other)
        return a is not None and b is not None and np.array_equal(a.elems, b.elems)

    def walk_back(self, tensor, stop):
        """First node upstream of ``tensor`` (itself included) for which ``stop(node)`` holds, through
        ops that pass its channels one to one and do not shrink the tensor (no pooling)."""
        for _ in range(LIMIT):
            node = self.view.nodes.get(node_of(tensor))
            if node is None:
                return None
            if stop(node):
                return node
            size = static_size(self.view.shape(tensor))
            ins = [t for t in self.view.data_inputs(node.name) if self.same_channels(t, tensor)
                   and size is not None and (static_size(self.view.shape(t)) or size + 1) <= size]
            if not ins:
                return None
            tensor = ins[0]
        return None

    def walk_forward(self, tensor, stop):
        """First consumer downstream of ``tensor`` for which ``stop(node)`` holds, through ops that
        keep its channels and its shape."""
        shape = self.view.shape(tensor)
        for _ in range(LIMIT):
            nxt = None
            for name, _i in self.view.consumers.get(node_of(tensor), []):
                node = self.view.nodes[name]
                if stop(node):
                    return node
                if name in self.view.reachable and self.view.shape(name + ":0") == shape \
                        and self.same_channels(name + ":0", tensor):
                    nxt = name
            if nxt is None:
                return None
            tensor = nxt + ":0"
        return None

    def is_global_pool(self, node):
        """Reduces every spatial position of its channels to one (global average/max pooling)."""
        x, y = self.view.data_inputs(node.name)[:1], node.name + ":0"
        inf, shape = self.a.tensor_info(y), self.view.shape(y)
        if not x or inf is None or not self.same_channels(x[0], y) or static_size(shape) is None:
            return False
        return static_size(shape) == shape[0] * len(inf.elems) < (static_size(self.view.shape(x[0])) or 0)

    def group_id(self, tensor):
        group = self.a.group_of_tensor(tensor)
        return None if group is None else group.id

    def squeeze_excitation(self, node):
        ins = self.view.data_inputs(node.name)
        if len(ins) != 2 or any(self.a.tensor_info(t) is None for t in ins):
            return None
        shapes = [self.view.shape(t) for t in ins]
        if any(s is None or len(s) != 4 for s in shapes):
            return None
        squeezed = [s[1] * s[2] == 1 for s in shapes]
        for k in (0, 1):   # at 1x1 resolution both inputs are squeezed: the gate is the one that fits
            if not squeezed[k]:
                continue
            expand = self.walk_back(ins[k], self.is_layer)
            reduce_ = expand and self.walk_back(self.view.data_inputs(expand.name)[0], self.is_layer)
            pool = reduce_ and self.walk_back(self.view.data_inputs(reduce_.name)[0], self.is_global_pool)
            if pool is None:
                continue
            if all(squeezed) and node_of(self.view.data_inputs(pool.name)[0]) != node_of(ins[1 - k]):
                continue
            return Block("squeeze_excitation", [pool.name, reduce_.name, expand.name, node.name],
                         self.group_id(reduce_.name + ":0"))
        return None

    def inverted_residual(self, node):
        x = self.view.data_inputs(node.name)[0]
        expand = self.walk_back(x, lambda n: n.name in self.layer_of)
        if expand is not None and not self.is_layer(expand, ("conv",), window=1):
            expand = None
        project = self.walk_forward(node.name + ":0", lambda n: n.name in self.layer_of)
        if project is None or not self.is_layer(project, ("conv",), window=1):
            return None
        add = self.walk_forward(project.name + ":0", lambda n: rules.has_tag(n.op, "add"))
        nodes = ([expand.name] if expand is not None else []) + [node.name, project.name]
        if add is not None:
            block_in = self.view.data_inputs(expand.name if expand is not None else node.name)[0]
            if node_of(block_in) in [node_of(t) for t in self.view.data_inputs(add.name)]:
                nodes.append(add.name)
        return Block("inverted_residual", nodes, self.group_id(node.name + ":0"))


def find_blocks(analysis):
    """The inverted-residual and squeeze-excitation blocks of an analysis, in graph order."""
    finder, blocks = _Finder(analysis), []
    for name in analysis.view.order:
        node = analysis.view.nodes[name]
        block = None
        if finder.is_layer(node, ("depthwise",)):
            block = finder.inverted_residual(node)
        elif rules.has_tag(node.op, "mul"):
            block = finder.squeeze_excitation(node)
        if block is not None:
            blocks.append(block)
    return blocks
