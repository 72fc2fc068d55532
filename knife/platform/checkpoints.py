"""Trial checkpoints: one folder format for `knife train` and sweep trials (DESIGN 10).

    <folder>/algorithm/         RLlib's Algorithm.save_to_path (learner, EnvRunner, module)
    <folder>/trial_state.json   the TrialProgress (metric stream, iteration, timer, metrics)
    <folder>/manifest.json      size and SHA-256 of every file above, written last

The manifest is written after everything else, so a folder without one was cut off while
being written. `verify_checkpoint` re-reads every file against it before a restore: a
truncated or corrupted file is named instead of surfacing as an UnpicklingError deep inside
RLlib. `restore_first_good` walks the candidates newest first and falls back on a bad one.
Hand-written: neither Tune nor RLlib checks a checkpoint's content (Tune's own checkpoint
folders carry no checksum), and a manifest is twenty lines.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from knife.platform.tracking import INTERRUPTED_CHECKPOINT_TAG, STOPPED_AT_TAG
from knife.platform.trial_loop import TrialProgress

STATE_FILE = "trial_state.json"
ALGO_DIR = "algorithm"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be restored; the message names the file and why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_checkpoint(algo: Any, progress: TrialProgress, folder: Path) -> Path:
    """Save the algorithm and the trial's progress as `folder`, then its manifest. Written
    beside it first and swapped in, so an older checkpoint there is replaced whole or kept."""
    folder = Path(folder).resolve()  # RLlib's restore needs absolute paths
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    algo.save_to_path(str(partial / ALGO_DIR))
    (partial / STATE_FILE).write_text(progress.to_json())
    entries = {
        p.relative_to(partial).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in _files(partial)
    }
    manifest = {"iteration": progress.iteration, "files": entries}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
    previous = folder.with_name(folder.name + ".previous")
    if folder.exists():
        shutil.rmtree(previous, ignore_errors=True)
        folder.rename(previous)
    partial.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)
    return folder


def stop_with_checkpoint(algo: Any, progress: TrialProgress, logger: Any, folder: Path) -> Path:
    """A stop notice between iterations (knife.platform.preemption): the checkpoint, and the
    run's tags saying where it stopped and where the checkpoint is."""
    folder = write_checkpoint(algo, progress, folder)
    logger.set_tags({STOPPED_AT_TAG: progress.iteration, INTERRUPTED_CHECKPOINT_TAG: folder})
    return folder


def _digest_into(digest: Any, value: Any) -> None:
    """Feed a nested state (dicts in key order, sequences, arrays, tensors, scalars) into a
    hash, so equal states give equal digests whatever process wrote them."""
    import numpy as np

    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            digest.update(f"<{key}>".encode())
            _digest_into(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _digest_into(digest, item)
    elif hasattr(value, "detach"):  # a torch tensor
        _digest_into(digest, value.detach().cpu().numpy())
    elif isinstance(value, np.ndarray):
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    else:
        digest.update(repr(value).encode())


def state_digest(algo: Any) -> dict[str, str]:
    """SHA-256 of what a paired branch starts from, per component: the networks (online and
    target), the optimizer state, the replay buffer and the sampling RNG (docs/design.md 9)."""
    from knife.policies.algorithm import KNIFE

    state = algo.get_state()
    learner = state["learner_group"]["learner"]
    parts = {
        "networks": learner["rl_module"],
        "optimizer": learner["optimizer"],
        "replay_buffer": state[KNIFE]["replay_buffer"],
        "rng": state[KNIFE]["rng"],
    }
    out = {}
    for name, value in parts.items():
        digest = hashlib.sha256()
        _digest_into(digest, value)
        out[name] = digest.hexdigest()
    return out


def verify_checkpoint(folder: Path) -> None:
    """Raise CheckpointError naming the first file that is missing, has the wrong size or
    the wrong checksum (or the missing manifest: a folder written only in part)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    try:
        entries = json.loads(manifest.read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(
            f"{manifest}: missing (the checkpoint was not fully written)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest}: unreadable ({type(exc).__name__}: {exc})") from exc
    for name, want in entries.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        size = path.stat().st_size
        if size != want["size"]:
            raise CheckpointError(f"{path}: {size} bytes, the manifest says {want['size']}")
        if _sha256(path) != want["sha256"]:
            raise CheckpointError(f"{path}: checksum differs from the manifest")


def saved_iteration(folder: Path) -> int:
    """The iteration a checkpoint folder was taken at (-1: no readable state file)."""
    try:
        return TrialProgress.from_json((Path(folder) / STATE_FILE).read_text()).iteration
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def restore_checkpoint(algo: Any, folder: Path) -> TrialProgress:
    """Verify `folder`, then restore `algo` from it; returns the trial's progress."""
    folder = Path(folder)
    verify_checkpoint(folder)
    progress = TrialProgress.from_json((folder / STATE_FILE).read_text())
    algo.restore_from_path(str(folder.resolve() / ALGO_DIR))
    return progress


def checkpoint_candidates(checkpoint: Any, trial_dir: str | Path | None) -> list[Any]:
    """Where a sweep trial may continue from, best first: the folder's checkpoints (Tune's
    and those a preempted trial wrote itself), latest iteration first, those without a
    readable state last; Tune's recorded checkpoint first when it is not in that folder
    (cloud storage). The folder matters after a driver crash: Tune's saved state can lag
    its checkpoints. By iteration, not by name: a trial Tune restarts without a checkpoint
    numbers its new ones from 0 again."""
    folder = Path(trial_dir) if trial_dir else None
    local: list[Path] = []
    if folder is not None and folder.is_dir():
        local = [p for p in folder.glob("checkpoint_*") if p.is_dir()]
        local.sort(key=lambda p: (saved_iteration(p), p.name), reverse=True)
    known = getattr(checkpoint, "path", None)
    if checkpoint is None or any(str(p) == known for p in local):
        return list(local)
    return [checkpoint, *local]


def restore_first_good(
    algo: Any, candidates: list[Any], rebuild: Callable[[], Any]
) -> tuple[Any, TrialProgress | None]:
    """(algorithm, progress) restored from the first candidate that verifies and restores
    (a folder or a Tune Checkpoint); a bad one is reported and the next one tried, on a
    freshly built algorithm. (algo, None): nothing to restore. All candidates bad: a
    CheckpointError that names each one's file and why."""
    failures = []
    for candidate in candidates:
        where = getattr(candidate, "path", candidate)
        try:
            if isinstance(candidate, Path):
                progress = restore_checkpoint(algo, candidate)
            else:
                with candidate.as_directory() as folder:
                    progress = restore_checkpoint(algo, Path(folder))
        except Exception as exc:  # any unreadable checkpoint: try the next one
            why = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            failures.append(why if str(where) in why else f"{where}: {why}")
            print(f"knife: cannot restore {failures[-1]}; trying an older checkpoint", flush=True)
            algo.stop()
            algo = rebuild()
            continue
        if failures:
            print(f"knife: restored from {where} (iteration {progress.iteration})", flush=True)
        return algo, progress
    if failures:
        raise CheckpointError("no checkpoint of this trial restores: " + "; ".join(failures))
    return algo, None
