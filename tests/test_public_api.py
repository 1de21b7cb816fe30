"""The public API: one level of names, listed in the README, and tf1prune 0.1's names as deprecated aliases."""
import importlib
import os
import re
import subprocess
import sys
import warnings

import pytest

import tf1prune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_readme_table_lists_exactly_the_public_names():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = text.split("### Python API")[1].split("```")[0]
    listed = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            listed |= set(re.findall(r"`(\w+)", row.split("|")[1]))
    assert listed == set(tf1prune.__all__), listed ^ set(tf1prune.__all__)
    assert len(tf1prune.__all__) <= 20
    runners = [n for n in tf1prune.__all__ if n.endswith(("Runner", "Pruner"))]
    assert runners and all(n.endswith("Runner") for n in runners)   # one naming scheme


@pytest.mark.parametrize("old,new", [
    ("OFAPruner", "OnceForAllRunner"), ("SoftFilterPruner", "SoftFilterPruningRunner"),
    ("Plan", None), ("Role", None), ("register", None), ("MaskHook", None), ("parse_input_specs", None)])
def test_old_names_are_deprecated_aliases(old, new):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(tf1prune, old)
    assert any(issubclass(w.category, DeprecationWarning) and old in str(w.message) for w in caught)
    if new:
        assert value is getattr(tf1prune, new)


def test_old_modules_are_deprecated_aliases_of_their_new_homes():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from tf1prune.runner import IterativePruningRunner
        from tf1prune.sparsity import ConstantSparsity, WeightPruner
        old_rules = importlib.import_module("tf1prune.rules.base")
    assert IterativePruningRunner is tf1prune.IterativePruningRunner
    assert WeightPruner is tf1prune.WeightPruningRunner and ConstantSparsity is tf1prune.ConstantSparsity
    assert old_rules.Role is importlib.import_module("tf1prune.core.rules.base").Role
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any("tf1prune.runner is deprecated: use tf1prune.workflows.iterative" in m for m in messages)
    with pytest.raises(AttributeError):
        tf1prune.nothing_like_this  # noqa: B018


def test_the_new_names_import_without_tensorflow_or_warnings():
    code = ("import sys, warnings\nwarnings.simplefilter('error')\nimport tf1prune\n"
            "assert 'tensorflow' not in sys.modules\nprint(len(tf1prune.__all__))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
