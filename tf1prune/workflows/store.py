"""Resumable results of a workflow: atomic, versioned JSON tied to what was measured.

A :class:`ResultStore` holds one ``kind`` of results (``sensitivity``, ``search``, ``ofa-search``...)
for one ``identity`` (the graph's channel structure and the SHA-256 of its weights) and one set
of ``settings`` (ratios, target, metric direction...).  Each entry is a key with a value or an
error and any extra fields (``examples``: per-example scores, when ``eval_fn`` returns them).  The file is rewritten atomically (temp file + rename), so a killed run
loses at most the entries since the last save.

- Opening a file made for another identity or settings is a :class:`Tf1PruneError` that names the
  file and the difference; ``recompute=True`` starts over, ``recompute=[key, ...]`` drops those
  entries only.
- A corrupt file (truncated, not JSON, not this kind, malformed entries) is a
  :class:`Tf1PruneError` naming the file.
- Failed entries are not results: :meth:`missing` returns them, so the next run retries them.

Example::

    store = ResultStore.open("ws/m.sens", "sensitivity", {"graph": digest, "weights": content},
                             {"ratios": [0.1, 0.5]})
    for key in store.missing(keys):
        store.record(key, *score(key))
    store.save()
"""
import json
import math
import numbers
import os

import numpy as np

from tf1prune.errors import Tf1PruneError
from tf1prune.files import atomic_write

FORMAT = "tf1prune-results"
VERSION = 2


def _number_or_none(value):
    return value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value))


class ResultStore:
    """The entries of one workflow run (see the module docstring)."""

    def __init__(self, path, kind, identity, settings):
        self.path, self.kind = path, kind
        self.identity, self.settings = dict(identity), dict(settings)
        self.baseline = None
        self.entries = {}   # key -> {"value": float|None, "error": str|None, ...}
        self.extra = {}     # workflow-level fields (e.g. a search's cap)

    # --- reading ----------------------------------------------------------
    @classmethod
    def read(cls, path, kind):
        """The store in ``path`` as it was written (any identity); a missing or corrupt file is a
        :class:`Tf1PruneError` naming it."""
        name = os.path.basename(path)
        try:
            with open(path) as f:
                data = json.load(f)
        except OSError as e:
            raise Tf1PruneError("cannot read %s file %r: %s" % (kind, path, e.strerror or e))
        except ValueError as e:
            raise Tf1PruneError("%s file %r is corrupt (%s): delete it or pass recompute=True" % (kind, path, e))
        problem = cls._problem(data, kind)
        if problem:
            raise Tf1PruneError("%s file %s (%s) is not usable: %s; delete it or pass recompute=True"
                                % (kind, name, path, problem))
        store = cls(path, kind, data["identity"], data["settings"])
        store.baseline = data.get("baseline")
        store.entries = {str(k): dict(v) for k, v in data["entries"].items()}
        store.extra = dict(data.get("extra") or {})
        return store

    @staticmethod
    def _problem(data, kind):
        """Why ``data`` is not a store of ``kind``, or None."""
        if not isinstance(data, dict):
            return "not a JSON object"
        if data.get("format") != FORMAT:
            return "not a tf1prune results file"
        if data.get("version") != VERSION:
            return "written by another tf1prune (version %r, this one reads %d)" % (data.get("version"), VERSION)
        if data.get("kind") != kind:
            return "it holds %r results, not %r" % (data.get("kind"), kind)
        for field in ("identity", "settings", "entries"):
            if not isinstance(data.get(field), dict):
                return "its %r is missing or not an object" % field
        if not _number_or_none(data.get("baseline")):
            return "its baseline is not a number"
        if not isinstance(data.get("extra", {}), dict):
            return "its 'extra' is not an object"
        for key, entry in data["entries"].items():
            if not isinstance(entry, dict) or not _number_or_none(entry.get("value")) \
                    or not (entry.get("error") is None or isinstance(entry.get("error"), str)) \
                    or not (entry.get("examples") is None or isinstance(entry.get("examples"), list)
                            and all(_number_or_none(v) and v is not None for v in entry["examples"])):
                return "entry %r is malformed" % key
        return None

    @classmethod
    def open(cls, path, kind, identity, settings, recompute=False):
        """The store at ``path`` to resume, or a new one when there is none (or ``recompute`` is true).

        ``recompute``: ``True`` starts over; a list of keys drops those entries.  A file made for another
        identity or other settings is refused with the difference."""
        if recompute is True or not os.path.exists(path):
            return cls(path, kind, identity, settings)
        store = cls.read(path, kind)
        for mine, theirs in ((identity, store.identity), (settings, store.settings)):
            for field in sorted(set(mine) | set(theirs)):
                if _canonical(mine.get(field)) != _canonical(theirs.get(field)):
                    made = {"graph": "for another graph (digest %r, this graph %r)",
                            "weights": "with other weights (%r, now %r: the model changed since)",
                            "calibrated": "%s BatchNorm calibration (this run: %s)"}.get(
                                field, "with %s %%r, not %%r" % field)
                    values = (theirs.get(field), mine.get(field))
                    if field == "calibrated":
                        values = tuple("with" if v else "without" for v in values)
                    made %= values
                    raise Tf1PruneError("%s file %s was made %s: delete it or pass recompute=True" % (kind, path, made))
        for key in (recompute or ()):
            store.entries.pop(str(key), None)
        return store

    # --- entries ------------------------------------------------------------
    def value(self, key):
        entry = self.entries.get(str(key))
        return None if entry is None else entry.get("value")

    def examples(self, key):
        """The per-example scores of ``key`` (an array), or None when ``eval_fn`` returned one number."""
        entry = self.entries.get(str(key))
        examples = None if entry is None or entry.get("value") is None else entry.get("examples")
        return None if examples is None else np.asarray(examples, np.float64)

    def error(self, key):
        entry = self.entries.get(str(key))
        return None if entry is None else entry.get("error")

    def missing(self, keys):
        """The keys of ``keys`` without a value: never measured, or failed (retried)."""
        return [k for k in keys if self.value(k) is None]

    def record(self, key, value, error=None, **fields):
        """Store a result (``value``) or a failure (``error``) for ``key``, with extra ``fields``."""
        entry = self.entries.setdefault(str(key), {})
        entry.update(fields, value=value if error is None else None, error=error)

    def record_score(self, key, value, error=None):
        """Record what an evaluation returned: a float, per-example scores (kept for paired
        comparisons), or a failure."""
        examples = getattr(value, "examples", None)
        self.record(key, None if value is None else float(value), error,
                    examples=None if examples is None else [float("%.7g" % v) for v in examples])

    def failures(self):
        """``{key: error}`` of the failed entries."""
        return {k: e["error"] for k, e in self.entries.items() if e.get("error")}

    def save(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        atomic_write(self.path, json.dumps({
            "format": FORMAT, "version": VERSION, "kind": self.kind, "identity": self.identity,
            "settings": self.settings, "baseline": self.baseline, "extra": self.extra, "entries": self.entries},
            indent=1, sort_keys=True))


def _canonical(value):
    """JSON round trip, so that tuples equal lists and int keys equal str keys."""
    return json.loads(json.dumps(value, sort_keys=True))
