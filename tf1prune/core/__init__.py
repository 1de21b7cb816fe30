"""Analysis: the graph view, the op rules, channel groups, the plan of a choice, blocks and MACs.

Nothing here chooses channels or touches a session: a GraphDef goes in, an
:class:`~tf1prune.core.analysis.Analysis` and, for a choice, a :class:`~tf1prune.core.plan.Plan` come out.
"""
