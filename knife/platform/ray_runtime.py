"""Ray start-up (DESIGN 10): embedded local Ray by default, or join a cluster.

Ray's token auth (on by default for local clusters since 2.59) is left as Ray sets it up.
"""

from __future__ import annotations

import os
import site
from pathlib import Path


def _source_root() -> Path:
    import knife

    return Path(knife.__file__).resolve().parent.parent


def _let_workers_import_knife() -> None:
    # In a source checkout that is not pip-installed, `knife` is importable in the driver only
    # because of its working directory. Local Ray workers inherit the driver's environment,
    # so putting the checkout on PYTHONPATH lets them unpickle knife classes too.
    root = str(_source_root())
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    if root in installed:
        return
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def start_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    log_to_driver: bool = False,
) -> bool:
    """Start embedded Ray, or join `address` / $RAY_ADDRESS.

    Returns True when this call initialized Ray (so the caller knows to stop it), False when
    Ray was already running in this process.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        # The cluster decides CPUs and the dashboard; only how chatty workers are is ours.
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        _let_workers_import_knife()
        # "local", not None: None would silently join any `ray start` cluster on this host.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            dashboard_host="127.0.0.1",  # Ray's (minimal) dashboard process: loopback only
            log_to_driver=log_to_driver,
        )
    return True


def stop_ray() -> None:
    """Shut Ray down in this process (a cluster keeps running)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
