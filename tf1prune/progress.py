"""Progress of long work: one line with a bar and an ETA on a terminal, nothing otherwise.

Every long loop of tf1prune (``ana``, ``search``, stripping a checkpoint, ``tf1prune-benchmark``)
takes a ``progress`` argument:

- ``True`` (the default): a :class:`Bar` on stderr when stderr is a terminal, silence when it is
  not (logs, CI, notebooks piping output);
- ``None`` or ``False``: silence;
- a callable ``progress(done, total, elapsed_seconds, what)``: called after each step.

Example::

    runner.ana(eval_fn, progress=lambda done, total, elapsed, what: print(done, total, what))
"""
import sys
import time


def _clock(seconds):
    seconds = int(round(seconds))
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60) if seconds >= 3600 \
        else "%d:%02d" % (seconds // 60, seconds % 60)


class Bar:
    """``label  37/120 [=====>        ] 31% 0:42 elapsed, ETA 1:33  what`` redrawn in place."""

    def __init__(self, label, stream=None, width=24, min_interval=0.2):
        self.label, self.stream, self.width, self.min_interval = label, stream or sys.stderr, width, min_interval
        self._last = 0.0

    def line(self, done, total, elapsed, what=""):
        """The text of the bar (without the carriage return)."""
        share = done / total if total else 1.0
        filled = int(self.width * share)
        bar = "=" * filled + (">" if filled < self.width else "") + " " * (self.width - filled - 1)
        eta = _clock(elapsed / done * (total - done)) if done else "?"
        return "%s %d/%d [%s] %3.0f%% %s elapsed, ETA %s  %s" % (
            self.label, done, total, bar[:self.width], 100 * share, _clock(elapsed), eta, what)

    def __call__(self, done, total, elapsed, what=""):
        now = time.time()
        final = done >= total
        if not final and now - self._last < self.min_interval:
            return
        self._last = now
        self.stream.write("\r\x1b[K" + self.line(done, total, elapsed, what)[:200] + ("\n" if final else ""))
        self.stream.flush()


def resolve(progress, label, stream=None):
    """The callable behind a ``progress`` argument (see the module docstring), or None for silence."""
    if progress is True:
        stream = stream or sys.stderr
        isatty = getattr(stream, "isatty", None)
        return Bar(label, stream) if isatty is not None and isatty() else None
    if progress is None or progress is False:
        return None
    if not callable(progress):
        from tf1prune.errors import Tf1PruneError
        raise Tf1PruneError("progress must be True, None or a callable(done, total, elapsed, what), got %r"
                            % (progress,))
    return progress


class Steps:
    """Count steps of a loop and report them: ``steps = Steps(total, progress, "strip"); steps.tick(what)``."""

    def __init__(self, total, progress, label):
        self.total, self.report, self.done, self.start = total, resolve(progress, label), 0, time.time()

    def tick(self, what=""):
        self.done += 1
        if self.report:
            self.report(self.done, self.total, time.time() - self.start, what)
