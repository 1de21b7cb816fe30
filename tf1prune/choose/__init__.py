"""Choice: channel criteria, cost models, allocation for a budget, candidate sampling and specs.

Reads an analysis and parameter values; produces a :class:`~tf1prune.choose.choice.Choice` (kept
channels per group) or a saved :class:`~tf1prune.choose.spec.Spec`.
"""
