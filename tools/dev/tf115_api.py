"""Extract the TF 1.15 API that tf1prune may use, from the wheels, into tests/data/tf115_api.json.

    pip download --no-deps --python-version 37 --implementation cp --abi cp37m \\
        --platform manylinux2010_x86_64 --only-binary=:all: tensorflow-cpu==1.15.0 -d wheels
    pip download --no-deps --python-version 37 --implementation cp --abi cp37m \\
        --platform manylinux1_x86_64 --only-binary=:all: numpy==1.16.6 protobuf==3.6.1 -d wheels
    python tools/dev/tf115_api.py --wheels wheels

Records (statically, nothing is imported or installed):

- every public name of ``tf.compat.v1`` in TF 1.15 (``tensorflow_core/_api/v1/compat/v1``), as
  dotted paths (``graph_util.convert_variables_to_constants``), and its sub-modules;
- the top-level names of the ``tensorflow.python``/``tensorflow.core`` modules tf1prune imports;
- numpy 1.16's public names (the ``__all__`` lists of the modules ``numpy/__init__`` gathers) and
  those of ``numpy.random``/``numpy.linalg``, the oldest numpy TF 1.15 allows (``numpy>=1.16``);
- the top-level names of the protobuf 3.6.1 modules tf1prune imports (TF 1.15 needs ``>=3.6.1``).

``tests/test_tf115_api.py`` checks tf1prune's source against the file.
"""
import ast
import glob
import json
import os
import sys
import zipfile

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("wheels", None, "folder holding the tensorflow-cpu 1.15.0, numpy 1.16.6 and protobuf 3.6.1 wheels")
flags.DEFINE_string("output", os.path.join(ROOT, "tests", "data", "tf115_api.json"), "file to write")
FLAGS = flags.FLAGS
V1 = "tensorflow_core/_api/v1/compat/v1/"
KERAS_V1 = "tensorflow_core/python/keras/api/_v1/keras/"


def _wheel(pattern):
    found = glob.glob(os.path.join(FLAGS.wheels, pattern))
    if not found:
        raise SystemExit("no %s in %s" % (pattern, FLAGS.wheels))
    return zipfile.ZipFile(found[0])


def _top_level_names(source):
    """Names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):
            for child in ast.walk(node):
                if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                    names.add(child.name)
                elif isinstance(child, ast.ImportFrom):
                    names.update((a.asname or a.name) for a in child.names)
                elif isinstance(child, ast.Assign):
                    names.update(t.id for t in child.targets if isinstance(t, ast.Name))
    return names


def compat_v1(wheel):
    """Dotted public names of tf.compat.v1 (modules end with '/'), ``tf.keras`` included (its v1
    API lives apart, in ``python/keras/api/_v1``)."""
    names = set()
    for entry in wheel.namelist():
        root = next((r for r in (V1, KERAS_V1) if entry.startswith(r)), None)
        if root is None or not entry.endswith("__init__.py"):
            continue
        module = entry[len(root):-len("__init__.py")].strip("/").replace("/", ".")
        if root == KERAS_V1:
            module = "keras." + module if module else "keras"
        prefix = module + "." if module else ""
        if module:
            names.add(module + "/")
        for node in ast.parse(wheel.read(entry)).body:
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if not (alias.asname or alias.name).startswith("_"):
                        names.add(prefix + (alias.asname or alias.name))
    return names


def imported_modules(prefixes):
    """``{module: [names]}`` that tf1prune imports from modules under ``prefixes``."""
    wanted = {}
    for path in glob.glob(os.path.join(ROOT, "tf1prune", "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefixes):
                wanted.setdefault(node.module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(prefixes):
                        wanted.setdefault(a.name, set())
    return wanted


def module_names(wheel, module, root):
    base = root + "/" + "/".join(module.split(".")[1:])
    for entry in (base + ".py", base + "/__init__.py"):
        if entry in wheel.namelist():
            return sorted(_top_level_names(wheel.read(entry)) | {n.split("/")[-1].split(".")[0] for n in wheel.namelist()
                                                                  if n.startswith(base + "/") and n.count("/") == base.count("/") + 1})
    return None


def numpy_names(wheel):
    """numpy 1.16's public names: ``__all__`` of the modules its __init__ star-imports, and sub-packages."""
    out = {"": set(), "random": set(), "linalg": set()}
    for entry in wheel.namelist():
        if not entry.endswith(".py") or entry.count("/") > 2:
            continue
        tree = ast.parse(wheel.read(entry))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets) \
                    and isinstance(node.value, (ast.List, ast.Tuple)):
                values = {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
                key = "random" if entry.startswith("numpy/random/") else "linalg" if entry.startswith("numpy/linalg/") \
                    else ""
                out[key] |= values
    out[""] |= {"random", "linalg", "newaxis", "ndarray", "float32", "float64", "int32", "int64", "bool_", "uint8",
                "integer", "floating", "generic", "dtype", "nan", "inf", "pi"}
    out["random"] |= {"RandomState", "seed", "get_state", "set_state"}   # the compiled mtrand's, not parseable
    return {k: sorted(v) for k, v in out.items()}


def main(argv):
    del argv
    tf_wheel = _wheel("tensorflow_cpu-1.15.0-*.whl")
    data = {"compat.v1": sorted(compat_v1(tf_wheel)), "tensorflow": {}, "numpy": numpy_names(_wheel("numpy-1.16*.whl")),
            "protobuf": {}}
    pb = _wheel("protobuf-3.6.1-*.whl")
    for key, wheel, prefixes, root in (("tensorflow", tf_wheel, ("tensorflow.python", "tensorflow.core"), "tensorflow_core"),
                                       ("protobuf", pb, ("google.protobuf",), "google")):
        for module, names in sorted(imported_modules(prefixes).items()):
            data[key][module] = module_names(wheel, module, root)
            for name in names:   # an imported sub-module: its names too (text_format.Merge)
                inner = module_names(wheel, module + "." + name, root)
                if inner is not None:
                    data[key][module + "." + name] = inner
    os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(data, f, indent=0, sort_keys=True)
    print("%s: %d compat.v1 names, %d tensorflow modules, %d numpy names" % (
        FLAGS.output, len(data["compat.v1"]), len(data["tensorflow"]), len(data["numpy"][""])), file=sys.stderr)


if __name__ == "__main__":
    flags.mark_flag_as_required("wheels")
    app.run(main)
