import contextlib
import time

import keras


class PhaseClock:
    """Wall-clock seconds spent in each phase of a training command.

    The trainer wraps each step in `phase(name)` and gives `callback()` to
    `fit`; `as_dict()` is the `phases` entry of `run.json`:
    `{"validate", "adapt", "build", "tracing", "fit", "evaluate",
    "scoreboard", "export", "verify", ..., "total"}` (seconds; `fit`
    includes `tracing`, `export` excludes `verify`; phases that did not run
    are absent).

    `tracing` is estimated from the fit callbacks: the first training batch
    and the first validation batch of the run take the tracing (and
    compilation) of the step functions on top of one ordinary step; the
    estimate is their duration minus a median step of the same kind.

    Example:

    >>> clock = PhaseClock()
    >>> with clock.phase("adapt"):
    ...     pass
    >>> sorted(clock.as_dict())
    ['adapt', 'total']
    """

    def __init__(self):
        self.seconds = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name):
        """Adds the time spent in the `with` block to phase `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name, seconds):
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def merge(self, other, prefix):
        """Adds `other`'s phases as `<prefix><phase>`."""
        for name, seconds in other.seconds.items():
            self.add(prefix + name, seconds)

    def callback(self):
        """A Keras callback adding the `tracing` estimate of one fit."""
        return _TracingClock(self)

    def as_dict(self):
        out = {k: round(v, 3) for k, v in self.seconds.items()}
        out["total"] = round(time.perf_counter() - self.started, 3)
        return out


def _median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else 0.0


class _TracingClock(keras.callbacks.Callback):
    """Times the batches of one `fit`; on train end adds the tracing
    estimate (see `PhaseClock`)."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.train, self.test = [], []
        self._begin = None

    def on_train_batch_begin(self, batch, logs=None):
        self._begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._begin is not None and len(self.train) < 64:
            self.train.append(time.perf_counter() - self._begin)

    def on_test_batch_begin(self, batch, logs=None):
        self._begin = time.perf_counter()

    def on_test_batch_end(self, batch, logs=None):
        if self._begin is not None and len(self.test) < 64:
            self.test.append(time.perf_counter() - self._begin)

    def on_train_end(self, logs=None):
        extra = 0.0
        for times in (self.train, self.test):
            if times:
                extra += max(times[0] - _median(times[1:] or times), 0.0)
        if self.train or self.test:
            self.clock.add("tracing", extra)
