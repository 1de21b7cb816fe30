"""Shared plumbing of the ``tf1prune-*`` tools.

The tools are absl apps whose ``main(argv)`` takes a full command line, so they can be called
in-process (``main(['tf1prune-convert', '--input_graph=...'])``); user errors become one
``error: ...`` line on stderr and exit code 2.  Importing a tool changes no process state and
does not load TensorFlow: :func:`launch` quiets TensorFlow's start-up, then loads it.
"""
import contextlib
import functools
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from tf1prune.errors import Tf1PruneError


@contextlib.contextmanager
def _devnull_fd2():
    """Send file descriptor 2 (C++ logging included) to /dev/null."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


FLAGS = flags.FLAGS
flags.DEFINE_string("input_graph", None, "Frozen GraphDef to read (binary .pb or text .pbtxt).")
flags.DEFINE_list("output_node_names", None, "Comma-separated output node names of the graph.")
flags.DEFINE_string("input_specs", None, "Input shapes, e.g. 'x:0=1,64,64,3;y:0=1,10:int32' "
                    "(default: placeholder shapes with batch 1).")
flags.DEFINE_list("excludes", [], "Comma-separated nodes whose output channels must not be pruned.")
flags.DEFINE_string("output_graph", None, "Slim frozen GraphDef to write (.pbtxt = text format).")
flags.DEFINE_string("spec", None, "Pruning spec (JSON) to apply, as written by --output_spec.")
flags.DEFINE_string("report", None, "Also write a visual report to this folder: index.html and its figures "
                    '(needs matplotlib: pip install "tf1prune[report]").')
flags.DEFINE_list("batch", ["1"], "Batch sizes latency is measured at; each replaces the first dimension of every "
                  "input (one for tf1prune-convert --latency_target or --channel_divisible auto, and tf1prune-analyze "
                  "--latency).")
flags.DEFINE_integer("threads", 0, "intra- and inter-op threads (0: TensorFlow's default, all cores).", lower_bound=0)


def batches(one=False):
    """The --batch flag as positive integers (``one``: exactly one value)."""
    try:
        values = [int(b) for b in names(FLAGS.batch)]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise Tf1PruneError("--batch takes positive integers, e.g. 1,8; got %r" % ",".join(FLAGS.batch))
    if one and len(values) != 1:
        raise Tf1PruneError("--batch takes one batch size here, got %s" % ",".join(map(str, values)))
    return values


def names(values):
    """A list flag's entries, stripped, without empty ones."""
    return [v.strip() for v in values or () if v.strip()]


def refuse(*names):
    """Shared flags a tool does not read: set, they are an error rather than silently ignored."""
    for name in names:
        if FLAGS[name].present:
            raise Tf1PruneError("--%s is not an option of this tool" % name)


def report_dir(*outputs):
    """The --report folder, checked before anything is written (matplotlib installed, not a file, not one of
    the ``outputs`` paths), or None."""
    path = FLAGS.report
    if not path:
        return None
    from tf1prune.report import require_matplotlib
    require_matplotlib()
    if os.path.exists(path) and not os.path.isdir(path):
        raise Tf1PruneError("--report is a file, not a folder: %s" % path)
    folder = os.path.realpath(path)
    for p in outputs:
        if p and (os.path.realpath(p) == folder or os.path.dirname(os.path.realpath(p)) == folder):
            raise Tf1PruneError("--report %s would hold or replace another file of this run (%s): choose a folder "
                                "of its own" % (path, p))
    return path


def input_specs():
    """The --input_specs flag, parsed."""
    from tf1prune.core.graph import parse_input_specs
    return parse_input_specs(FLAGS.input_specs)


def load_and_analyze(path, excludes=(), note=True):
    """Read graph ``path`` and analyse it with the --input_specs and --output_node_names flags
    (``note``: print where shapes were measured rather than inferred)."""
    from tf1prune.core.analysis import analyze
    from tf1prune.files import load_graph_def
    analysis = analyze(load_graph_def(path), input_specs(), names(FLAGS.output_node_names), names(excludes))
    line = analysis.view.shape_note()
    if note and line:
        print(line)
    return analysis


def _parse(argv):
    """Parse ``argv`` into FLAGS from scratch (in-process callers may run several command lines)."""
    FLAGS.unparse_flags()
    try:
        rest = FLAGS(list(argv))
    except flags.Error:
        FLAGS.mark_as_parsed()  # defaults, so that absl's own exit path can read its flags
        raise
    if rest[1:]:
        raise Tf1PruneError("unexpected argument %r" % rest[1])


def _absl_parser(argv):
    """``app.run`` flags parser: errors are left to ``main``, which parses again and reports them."""
    try:
        _parse(argv)
    except (flags.Error, Tf1PruneError):
        pass
    return argv


def quiet():
    """Silence TensorFlow's Python logging and absl logging (TensorFlow in graph mode)."""
    import tensorflow.compat.v1 as tf
    tf.get_logger().setLevel("ERROR")
    absl_logging.set_verbosity(absl_logging.ERROR)
    tf.disable_eager_execution()


def tool(required):
    """Decorate ``body()`` (reading FLAGS) into a testable absl ``main(argv)`` returning an exit code."""
    def decorate(body):
        @functools.wraps(body)
        def main(argv):
            try:
                _parse(argv)
                for name in required:
                    if FLAGS[name].value in (None, "", []):
                        raise Tf1PruneError("--%s is required" % name)
                quiet()
                body()
            except (Tf1PruneError, OSError, flags.Error) as e:
                lines = str(e).strip().splitlines() or [type(e).__name__]
                sys.stdout.flush()
                sys.stderr.write("error: %s\n" % lines[0])
                return 2
            return 0
        return main
    return decorate


def launch(main):
    """Run ``main`` as an absl app (the console-script entry points).

    TensorFlow's C++ start-up lines ignore ``TF_CPP_MIN_LOG_LEVEL``, and it registers an absl init
    callback that probes for GPUs and logs a cuInit error on CPU-only hosts; loading TensorFlow and
    probing once here, silenced, makes both quiet.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _devnull_fd2():
        import tensorflow.compat.v1 as tf
        tf.config.experimental.list_physical_devices("GPU")
    app.run(main, flags_parser=_absl_parser)
