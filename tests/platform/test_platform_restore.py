"""Checkpoints carry a manifest (size + SHA-256 of every file) and a trial restores from the
first one that verifies, newest first (knife.platform.checkpoints; no Ray: a stand-in
algorithm that pickles its state as RLlib does)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform.checkpoints import (  # noqa: E402
    ALGO_DIR,
    MANIFEST,
    CheckpointError,
    checkpoint_candidates,
    restore_first_good,
    verify_checkpoint,
    write_checkpoint,
)
from knife.platform.trial_loop import TrialProgress  # noqa: E402


class Algo:
    built = 0

    def __init__(self):
        Algo.built += 1
        self.restored_from = None
        self.stopped = False

    def save_to_path(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "state.pkl").write_bytes(pickle.dumps({"weights": list(range(100))}))
        return path

    def restore_from_path(self, path):
        with open(Path(path) / "state.pkl", "rb") as fh:
            pickle.load(fh)  # a truncated file fails here, as RLlib's restore does
        self.restored_from = path

    def stop(self):
        self.stopped = True


def _checkpoint(folder: Path, iteration: int, damage: str = "") -> Path:
    progress = TrialProgress(iteration=iteration, metrics={"env_steps": 10.0 * iteration})
    write_checkpoint(Algo(), progress, folder)
    state = folder / ALGO_DIR / "state.pkl"
    data = state.read_bytes()
    if damage == "truncated":
        state.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # same size, one byte changed: only the checksum sees it
        state.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    elif damage == "unfinished":  # cut off before its manifest
        (folder / MANIFEST).unlink()
    return folder


def test_manifest_names_the_damaged_file(tmp_path):
    verify_checkpoint(_checkpoint(tmp_path / "good", 1))
    with pytest.raises(CheckpointError, match=r"state\.pkl: \d+ bytes, the manifest says"):
        verify_checkpoint(_checkpoint(tmp_path / "t", 1, "truncated"))
    with pytest.raises(CheckpointError, match=r"state\.pkl: checksum differs"):
        verify_checkpoint(_checkpoint(tmp_path / "f", 1, "flipped"))
    with pytest.raises(CheckpointError, match=r"manifest\.json: missing"):
        verify_checkpoint(_checkpoint(tmp_path / "u", 1, "unfinished"))


def test_newest_good_checkpoint_wins_and_damaged_ones_are_skipped(tmp_path, capsys):
    _checkpoint(tmp_path / "checkpoint_000001", 1)
    _checkpoint(tmp_path / "checkpoint_000002", 2)
    _checkpoint(tmp_path / "checkpoint_000003", 3, "truncated")
    (tmp_path / "checkpoint_000004").mkdir()  # written only in part: no state file
    # A trial Tune restarted without a checkpoint numbers from 0 again: iteration 5 here.
    _checkpoint(tmp_path / "checkpoint_000000", 5, "flipped")
    candidates = checkpoint_candidates(None, str(tmp_path))
    # Latest saved iteration first, unreadable state last.
    assert [p.name[-1] for p in candidates] == ["0", "3", "2", "1", "4"]
    first = Algo()
    algo, progress = restore_first_good(first, candidates, Algo)
    assert progress.iteration == 2 and algo.restored_from.endswith("checkpoint_000002/algorithm")
    assert first.stopped and algo is not first  # rebuilt after a failed restore
    out = capsys.readouterr().out
    assert "checkpoint_000000/algorithm/state.pkl: checksum differs" in out
    assert "checkpoint_000003/algorithm/state.pkl" in out and "the manifest says" in out
    assert "restored from" in out and "checkpoint_000002 (iteration 2)" in out


def test_nothing_to_restore_and_all_bad(tmp_path):
    algo = Algo()
    assert restore_first_good(algo, checkpoint_candidates(None, str(tmp_path)), Algo) == (
        algo,
        None,
    )
    _checkpoint(tmp_path / "checkpoint_000001", 1, "truncated")
    with pytest.raises(CheckpointError, match=r"no checkpoint of this trial restores: .*000001"):
        restore_first_good(Algo(), checkpoint_candidates(None, str(tmp_path)), Algo)


def test_resume_closes_its_sweeps_stale_runs_and_the_report_counts_what_it_left_out(tmp_path):
    from mlflow import MlflowClient

    from knife.platform.report import left_out_line, unfinished_counts
    from knife.platform.sweep_resume import close_stale_runs
    from knife.platform.tracking import MlflowStore

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    store = MlflowStore(uri)
    exp = store.experiment_id("exp")
    client = MlflowClient(uri)
    ours = client.create_run(exp, tags={"sweep": "a", "knife.kind": "trial"}).info.run_id
    other = client.create_run(exp, tags={"sweep": "b", "knife.kind": "trial"}).info.run_id
    done = client.create_run(exp, tags={"sweep": "a", "knife.kind": "trial"}).info.run_id
    client.set_terminated(done, "FINISHED")
    failed = client.create_run(exp, tags={"sweep": "a", "knife.kind": "trial"}).info.run_id
    client.set_terminated(failed, "FAILED")

    assert close_stale_runs(uri, "exp", "a") == 1
    assert client.get_run(ours).info.status == "KILLED"
    assert client.get_run(ours).data.tags["knife.closed_stale"] == "resume"
    assert client.get_run(other).info.status == "RUNNING"  # another sweep's: left alone
    assert client.get_run(done).info.status == "FINISHED"
    assert close_stale_runs(uri, "no_such_experiment", "a") == 0

    counts = unfinished_counts(store, exp)
    assert counts == {"FAILED": 1, "KILLED": 1, "RUNNING": 1}
    line = left_out_line(counts)
    assert line.startswith("Left out: 3 runs not FINISHED (1 FAILED, 1 KILLED, 1 RUNNING)")
    assert left_out_line({}) == ""


def test_tune_state_naming_deleted_checkpoints_is_repaired_before_resume(tmp_path):
    """Tune's saved state can name checkpoints its rotation deleted after the state was
    written; sweep.repair_tune_state drops them so Tune does not fail the trial on restore."""
    import json

    from ray import cloudpickle
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager, _TrainingResult

    from knife.platform.sweep_resume import repair_tune_state

    def state(*names):
        manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
        for name in names:
            (tmp_path / name).mkdir(exist_ok=True)
            manager.register_checkpoint(
                _TrainingResult(checkpoint=Checkpoint(str(tmp_path / name)), metrics={})
            )
        blob = {"_type": "CLOUDPICKLE_FALLBACK", "value": cloudpickle.dumps(manager).hex()}
        return ["{}", json.dumps({"checkpoint_manager": blob})]

    path = tmp_path / "experiment_state-x.json"
    path.write_text(json.dumps({"trial_data": [state("c1", "c2"), state("d1", "d2")]}))
    (tmp_path / "c2").rmdir()  # the latest of trial 0 was rotated away after the save
    for name in ("d1", "d2"):
        (tmp_path / name).rmdir()  # all of trial 1's
    assert repair_tune_state(str(tmp_path)) == 3
    trials = json.loads(path.read_text())["trial_data"]
    managers = [
        cloudpickle.loads(bytes.fromhex(json.loads(t[1])["checkpoint_manager"]["value"]))
        for t in trials
    ]
    assert managers[0].latest_checkpoint_result.checkpoint.path.endswith("c1")
    assert managers[1].latest_checkpoint_result is None  # continues from its folder, if any
    assert repair_tune_state(str(tmp_path)) == 0  # nothing left to drop
