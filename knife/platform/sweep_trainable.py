"""The Tune trainable of a sweep trial: `sweep_trial` as Tune's function trainable, plus a
SIGTERM handler in the worker process (DESIGN 10).

Ray's own worker handler exits the process at once, so a trial whose worker alone is sent
SIGTERM (a node being drained) would lose what it trained since its last checkpoint. Only a
process's main thread can install a handler, and the trial function runs in a thread of
Tune's, so the handler is installed in `setup`, which runs in the main thread. It asks the
running trial to stop after its iteration with a checkpoint (knife.platform.trial_runner),
waits for that (at most the grace period), then lets Ray's handler end the process; Tune
then retries the trial, which continues from that checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from ray.tune.trainable.function_trainable import wrap_function

from knife.platform.trial_runner import (
    META,
    WORKER_IDLE,
    WORKER_STOP,
    preempt_grace_s,
    sweep_trial,
)

_installed = False


def _install_worker_stop(grace_s: float) -> None:
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    ray_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, ray_handler)  # a second SIGTERM: Ray's exit, at once
        WORKER_STOP.set()

        def exit_when_idle() -> None:
            WORKER_IDLE.wait(grace_s)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=exit_when_idle, name="knife-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = True


class KnifeTrial(wrap_function(sweep_trial)):
    """`sweep_trial`, with the worker's SIGTERM handler installed before it starts."""

    def setup(self, config: dict[str, Any]) -> None:
        _install_worker_stop(preempt_grace_s(config[META]))
        super().setup(config)
