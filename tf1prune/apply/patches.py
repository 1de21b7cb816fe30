"""Constant patches: a candidate as the constants that turn a frozen graph into its sparse graph.

:class:`Patcher` gives, for a :class:`~tf1prune.core.choice.Choice`, the constants of the plan that
the sparse graph zeroes (kernels, biases, BatchNorm scale and offset of the pruned channels) and,
with calibration batches, every BatchNorm's moving statistics re-estimated for that candidate
(adaptive BatchNorm).  The evaluation engine patches them into the frozen graph, so no candidate
needs a graph of its own.

Example::

    with Patcher(analysis, calibration_data=batches) as patcher:
        patches = patcher.patches(choice)      # {const name: value}
"""
import numpy as np

from tf1prune.apply import calibrate
from tf1prune.core.rules import build


class Patcher:
    """Patches of candidates of one frozen graph (see the module docstring).

    Args:
      analysis: the analysis of the graph's structure.
      graph_def: the weights, a frozen graph of that structure (default: the analysed graph).
      calibration_data: feed dicts (or a callable returning them); when given, every candidate's
        BatchNorm statistics are re-estimated on them.
    """

    def __init__(self, analysis, graph_def=None, calibration_data=None):
        self.analysis = analysis
        self.graph_def = graph_def or analysis.view.graph_def
        self._nodes = {n.name: n for n in self.graph_def.node}
        self._originals = {}
        self.batches = None if calibration_data is None else calibrate.feed_batches(calibration_data)
        self.calibrator = None if self.batches is None else calibrate.Calibrator(analysis, self.graph_def)

    def value(self, name):
        """The original value of constant ``name`` (cached)."""
        if name not in self._originals:
            self._originals[name] = np.asarray(build.const_value(self._nodes[name]))
        return self._originals[name]

    def calibrated(self, patches):
        """``patches`` with the BatchNorm statistics of the graph they make (when calibrating)."""
        if self.calibrator is None:
            return patches
        return dict(patches, **self.calibrator.statistics(self.batches, patches))

    def baseline(self):
        """Patches of the unpruned candidate: none, or its recalibrated statistics."""
        return self.calibrated({})

    def patches(self, choice):
        """The patches of the candidate ``choice``."""
        plan = self.analysis.plan(choice)
        return self.calibrated(plan.sparse_values(self.value))

    def statistics(self, choice):
        """The BatchNorm statistics re-estimated for ``choice`` (empty without calibration data)."""
        if self.calibrator is None:
            return {}
        plan = self.analysis.plan(choice)
        return self.calibrator.statistics(self.batches, plan.sparse_values(self.value))

    def close(self):
        if self.calibrator is not None:
            self.calibrator.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
