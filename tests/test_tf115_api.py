"""tf1prune's source against TF 1.15 (Python 3.7, numpy 1.16, protobuf 3.6.1), statically.

``tests/data/tf115_api.json`` is extracted from the wheels by ``tools/tf115_api.py``.  Checked: every
``tf.<...>`` attribute path (``tf`` being ``tensorflow.compat.v1``) starts with a public TF 1.15
``tf.compat.v1`` name, every ``tensorflow.python``/``tensorflow.core`` and ``google.protobuf``
import (and ``module.attribute`` use of one) exists in those versions, every ``np.<name>`` is public
in numpy 1.16, and every file parses as Python 3.7.  Not checked: methods and attributes of objects
(``graph.get_operation_by_name``), keyword arguments, and behaviour.
"""
import ast
import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = json.load(open(os.path.join(ROOT, "tests", "data", "tf115_api.json")))
COMPAT = set(API["compat.v1"])
MODULES = dict(API["tensorflow"], **API["protobuf"])


def _chain(node):
    """``a.b.c`` of an attribute node, or None when its base is not a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return (node.id, list(reversed(parts))) if isinstance(node, ast.Name) else None


def _compat_ok(parts):
    for k in range(1, len(parts) + 1):
        prefix = ".".join(parts[:k])
        if prefix + "/" in COMPAT:   # a sub-module: its attribute must be there too
            continue
        return prefix in COMPAT
    return True


def problems(source, filename="<source>"):
    """What in ``source`` TF 1.15, numpy 1.16, protobuf 3.6.1 or Python 3.7 lacks."""
    try:
        tree = ast.parse(source, filename, feature_version=(3, 7))
    except SyntaxError as e:
        return ["%s:%s: not Python 3.7 syntax: %s" % (filename, e.lineno, e.msg)]
    _mark_parents(tree)
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "tensorflow.compat.v1":
                    aliases[a.asname or a.name] = "tf"
                elif a.name == "numpy":
                    aliases[a.asname or a.name] = "np"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                ("tensorflow.python", "tensorflow.core", "google.protobuf")):
            names = MODULES.get(node.module)
            if names is None:
                found.append("%s:%d: module %s" % (filename, node.lineno, node.module))
                continue
            for a in node.names:
                if a.name not in names:
                    found.append("%s:%d: %s.%s" % (filename, node.lineno, node.module, a.name))
                elif node.module + "." + a.name in MODULES:
                    aliases[a.asname or a.name] = node.module + "." + a.name
        elif isinstance(node, ast.FunctionDef) and node.name == "_tf":
            aliases["tf"] = "tf"   # a lazy import helper returning tensorflow.compat.v1
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "_parent", None), ast.Attribute):
            continue
        chain = _chain(node)
        if chain is None or chain[0] not in aliases:
            continue
        kind, parts = aliases[chain[0]], chain[1]
        if kind == "tf" and not _compat_ok(parts):
            found.append("%s:%d: tf.%s" % (filename, node.lineno, ".".join(parts)))
        elif kind == "np":
            space = parts[0] if parts[0] in ("random", "linalg") and len(parts) > 1 else ""
            name = parts[1] if space else parts[0]
            if name not in API["numpy"][space]:
                found.append("%s:%d: np.%s" % (filename, node.lineno, ".".join(parts)))
        elif kind in MODULES and parts[0] not in MODULES[kind]:
            found.append("%s:%d: %s.%s" % (filename, node.lineno, kind, parts[0]))
    return sorted(set(found))


def _mark_parents(tree):
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child._parent = node


def sources():
    return sorted(glob.glob(os.path.join(ROOT, "tf1prune", "**", "*.py"), recursive=True))


@pytest.mark.parametrize("path", sources(), ids=lambda p: os.path.relpath(p, ROOT))
def test_source_uses_only_what_tf115_has(path):
    assert problems(open(path).read(), os.path.relpath(path, ROOT)) == []


def test_the_check_catches_what_tf115_lacks():
    bad = ("import numpy as np\nimport tensorflow.compat.v1 as tf\n"
           "tf.config.list_physical_devices('GPU')\n"            # TF 2.1+
           "tf.graph_util.convert_variables_to_constants\n"     # fine
           "np.random.default_rng(0)\n"                         # numpy 1.17+
           "from tensorflow.python.util import nest_util\n"     # not in TF 1.15
           "from google.protobuf import json_format\n")         # fine
    assert sorted(p.split(": ", 1)[1] for p in problems(bad)) == [
        "np.random.default_rng", "tensorflow.python.util.nest_util", "tf.config.list_physical_devices"]
    assert "not Python 3.7 syntax" in problems("if (n := 3):\n    pass\n")[0]
