"""tf1prune-benchmark from a source checkout (same as the installed console script)."""
import os, sys; sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E401
from tf1prune.cli.benchmark import run
run()
