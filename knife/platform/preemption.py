"""Graceful preemption (DESIGN 10): a stop notice ends the trial at an iteration boundary.

A cloud provider that takes a spot/preemptible machine back sends SIGTERM and, about 30 s
later, SIGKILL. The first SIGTERM (or Ctrl-C) sets a `StopRequest`; the trial loop checks it
after every iteration (`StopRequest.hook`), so the checkpoint it then writes is consistent
(no half-done learner update), its MLflow run ends KILLED and `knife` exits 143 (SIGTERM) or
130 (Ctrl-C). A second notice stops at once. A sweep's driver relays its notice to the
trials through a file in the sweep's storage folder (`NOTICE_FILE`), which every node sees;
a Ray worker process that is itself sent SIGTERM sets the request on its way out.

Only the main thread can install signal handlers; elsewhere `install` does nothing and the
request is set by the other two routes.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOTICE_FILE = "knife-stop-notice"  # in the sweep's Tune folder; removed by --resume
ACK_FILE = "knife-stopped.json"  # in a trial's folder: it stopped with a checkpoint
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(KeyboardInterrupt):
    """The trial stopped on a notice (a KeyboardInterrupt, so Ctrl-C paths apply: the run ends
    KILLED). `exit_code` is what `knife` exits with: 128 + the signal's number."""

    def __init__(self, signum: int = signal.SIGTERM, at_boundary: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        # True: raised between iterations, so the algorithm's state is whole and worth a
        # checkpoint; False: a second notice cut an iteration short.
        self.at_boundary = at_boundary

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


class StopRequest:
    """Set once by the first notice; read by the trial loop after each iteration."""

    def __init__(
        self, notice_file: str | Path | None = None, event: threading.Event | None = None
    ) -> None:
        # `event`: a notice shared with others (a worker process's own, set by its handler).
        self._event = event if event is not None else threading.Event()
        self.signum = int(signal.SIGTERM)
        self.notice_file = Path(notice_file) if notice_file else None

    def set(self, signum: int = signal.SIGTERM) -> None:
        if not self._event.is_set():
            self.signum = int(signum)
            self._event.set()

    @property
    def requested(self) -> bool:
        if not self._event.is_set() and self.notice_file is not None:
            if self.notice_file.exists():  # a stat per iteration: microseconds
                self.set(signal.SIGTERM)
        return self._event.is_set()

    def hook(self, progress: Any, done: bool) -> None:
        """A trial-loop hook: stop after this iteration when a notice came (not when the
        trial just finished: finishing is better than a checkpoint)."""
        if not done and self.requested:
            raise Preempted(self.signum, at_boundary=True)

    def install(self) -> Callable[[], None]:
        """SIGTERM and SIGINT set this request; a second one raises Preempted at once.
        Returns a function that puts the previous handlers back (a no-op off the main
        thread, where handlers cannot be installed)."""

        def on_signal(signum: int, frame: object) -> None:
            if self._event.is_set():
                raise Preempted(signum)  # the second notice: stop now
            self.set(signum)
            print(
                f"knife: {signal.Signals(signum).name} received: stopping after this "
                "iteration with a checkpoint (send it again to stop at once)",
                flush=True,
            )

        return install_handlers(on_signal)


def install_handlers(on_signal: Callable[[int, object], None]) -> Callable[[], None]:
    """`on_signal` for SIGTERM and SIGINT; returns a function that puts the previous handlers
    back. Off the main thread, where Python cannot install handlers: nothing, and a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return restore
