"""Appliers of a plan: slim and sparse graphs, session masks, constant patches, BatchNorm
recalibration, checkpoint slices, fine-grained and elastic masks.

Each takes a :class:`~tf1prune.core.plan.Plan` (or masks made from one) and one kind of model; none
looks at op types.
"""
