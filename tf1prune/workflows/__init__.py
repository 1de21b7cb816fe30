"""Workflows on top of the stages: the session runners (iterative, one-step, once-for-all, weight
sparsity), soft filter pruning, the label-free search of frozen graphs, and pruning to a measured
latency.

They share one evaluation engine (:mod:`tf1prune.workflows.engine`) and one result store
(:mod:`tf1prune.workflows.store`).
"""
