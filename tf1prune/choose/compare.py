"""Is a candidate better than the reference beyond the noise of its validation score?

A score measured on a few thousand validation images moves by more than the differences a search
ranks: picking the best of twenty by its mean mostly picks noise.  When ``eval_fn`` returns
per-example scores (e.g. each image's correctness or loss), a candidate replaces the reference only
when a one-sided paired test over the examples says it is better, at ``level`` divided by the number
of candidates compared (Bonferroni: the best of many is compared, not one chosen beforehand).

Example::

    if significantly_better(candidate_examples, uniform_examples, comparisons=19):
        ...
"""
import math

import numpy as np

LEVEL = 0.05


def paired_p_value(candidate, reference, higher_is_better=True):
    """One-sided p-value that ``candidate`` (per-example scores) is better than ``reference`` on the
    same examples (normal approximation of the paired mean difference)."""
    d = np.asarray(candidate, np.float64) - np.asarray(reference, np.float64)
    d = d if higher_is_better else -d
    mean = d.mean()
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    if sd == 0.0:
        return 0.0 if mean > 0 else 1.0
    z = mean / (sd / math.sqrt(len(d)))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def significantly_better(candidate, reference, higher_is_better=True, comparisons=1, level=LEVEL):
    """True when ``candidate`` beats ``reference`` at ``level / comparisons`` (see the module docstring);
    they must score the same examples in the same order."""
    if len(candidate) != len(reference):
        return False
    return paired_p_value(candidate, reference, higher_is_better) < level / max(1, comparisons)
