"""Workflows on top of the stages: the session runners (iterative, one-step, once-for-all, weight
sparsity), soft filter pruning, and the label-free search of frozen graphs.

They share one evaluation engine (:mod:`tf1prune.workflows.engine`) and one result store
(:mod:`tf1prune.workflows.store`).
"""
