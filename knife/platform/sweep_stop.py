"""A sweep's graceful stop (DESIGN 10): SIGTERM or Ctrl-C to `knife sweep` checkpoints the
running trials before Tune stops.

    driver signal -> notice file in the sweep's folder (with a deadline: now + grace)
    each trial, after its iteration -> checkpoint in its folder, run KILLED, an ack file
    driver (a Tune callback) -> all running trials acked, or the deadline passed -> SIGUSR1
    to itself, which Tune's own handler turns into its stop: state saved, actors ended

A file, not a Ray actor or message: trials on every node see the sweep's storage folder,
and the callback keeps no state of its own, so a restored Tuner (whose callbacks Tune
unpickles) behaves the same. With cloud storage (s3://, gs://) the trials cannot see the
file: the driver stops Tune at once and the trials continue from their last periodic
checkpoint. A second signal stops at once too.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from knife.platform.preemption import ACK_FILE, NOTICE_FILE, Preempted, install_handlers

# Cloud storage: the notice lives only in the driver process (the trials cannot see it).
_IN_MEMORY: dict[str, dict[str, Any]] = {}


def _local(tune_path: str) -> bool:
    return "://" not in tune_path


def read_notice(tune_path: str) -> dict[str, Any] | None:
    """The stop notice of this sweep ({"signal", "deadline", "stopping"}), or None."""
    if not _local(tune_path):
        return _IN_MEMORY.get(tune_path)
    try:
        return json.loads((Path(tune_path) / NOTICE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _save_notice(tune_path: str, notice: dict[str, Any]) -> None:
    if not _local(tune_path):
        _IN_MEMORY[tune_path] = notice
        return
    path = Path(tune_path) / NOTICE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(notice))
    tmp.replace(path)  # whole or absent: trials read it while it is written


def clear_notice(tune_path: str) -> None:
    """Before a resume: the notice and the trials' acks belong to the stop that is over."""
    _IN_MEMORY.pop(tune_path, None)
    if _local(tune_path):
        (Path(tune_path) / NOTICE_FILE).unlink(missing_ok=True)
        for ack in Path(tune_path).glob(f"*/{ACK_FILE}"):
            ack.unlink(missing_ok=True)


def _stop_tune_now() -> None:
    os.kill(os.getpid(), signal.SIGUSR1)  # Tune's own handler: stop, save the state


def install_stop_handlers(tune_path: str, grace_s: float) -> Callable[[], None]:
    """SIGTERM and SIGINT to the driver start the graceful stop; a second one (or any, with
    cloud storage) stops Tune at once. Returns a function that puts the previous handlers
    back (a no-op off the main thread)."""
    # Tune would otherwise replace the SIGINT handler with its immediate stop.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        notice = read_notice(tune_path)
        if notice is None and _local(tune_path):
            _save_notice(tune_path, {"signal": signum, "deadline": time.time() + grace_s})
            print(
                f"knife: {name} received: the running trials stop after their iteration with "
                f"a checkpoint (waiting up to {grace_s:g} s), then the sweep stops; continue it "
                "with --resume (send the signal again to stop at once)",
                flush=True,
            )
            return
        if notice is None:  # cloud storage: no trial would see it; it says why Tune stopped
            _save_notice(tune_path, {"signal": signum, "deadline": 0.0, "stopping": True})
        print(f"knife: {name}: stopping the sweep now", flush=True)
        _stop_tune_now()

    return install_handlers(on_signal)


def stopped_by(tune_path: str) -> Preempted | None:
    """After Tune returned: the stop it was asked for, if any (its signal: the exit code)."""
    notice = read_notice(tune_path)
    return None if notice is None else Preempted(int(notice["signal"]))


class StopWhenTrialsCheckpointed(Callback):
    """Stops Tune once every running trial acknowledged the notice, or at its deadline."""

    def __init__(self, tune_path: str) -> None:
        self.tune_path = tune_path

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        notice = read_notice(self.tune_path)
        if notice is None or notice.get("stopping"):
            return
        running = [t for t in trials if t.status == "RUNNING"]
        waiting = [t for t in running if not (Path(t.path) / ACK_FILE).exists()]
        if waiting and time.time() < float(notice["deadline"]):
            return
        _save_notice(self.tune_path, {**notice, "stopping": True})
        line = f"knife: {len(running) - len(waiting)} of {len(running)} running trials stopped"
        line += " with a checkpoint"
        if waiting:
            names = ", ".join(str(t) for t in waiting)
            line += f"; not within the grace period: {names} (they continue from their last"
            line += " periodic checkpoint)"
        print(line + "; stopping the sweep", flush=True)
        _stop_tune_now()
