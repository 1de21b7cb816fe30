"""tf1prune: channel pruning for TensorFlow-1-style graphs.

Example::

    import tf1prune
    a = tf1prune.analyze(graph_def, {'input:0': ((1, 28, 28, 1), 'float32')}, ['logits'])
    spec = tf1prune.make_spec(a, sparsity=0.5)
    slim = tf1prune.slim_graph_def(a, spec)
"""
from tf1prune.analysis import analyze
from tf1prune.errors import Tf1PruneError
from tf1prune.graph import load_graph_def, parse_input_specs, save_graph_def

__all__ = ["analyze", "Tf1PruneError", "load_graph_def", "parse_input_specs", "save_graph_def"]
