"""A sweep trial restores from the first checkpoint that restores: Tune's, then its folder's
own, newest first (trial_runner.restore_first_good; no Ray: a stand-in algorithm)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform.trial_loop import TrialProgress  # noqa: E402
from knife.platform.trial_runner import (  # noqa: E402
    ALGO_DIR,
    STATE_FILE,
    _checkpoint_candidates,
    restore_first_good,
)


class Algo:
    built = 0

    def __init__(self):
        Algo.built += 1
        self.restored_from = None
        self.stopped = False

    def restore_from_path(self, path):
        with open(Path(path) / "state.pkl", "rb") as fh:
            pickle.load(fh)  # a truncated file fails here, as RLlib's restore does
        self.restored_from = path

    def stop(self):
        self.stopped = True


def _checkpoint(folder: Path, iteration: int, truncated: bool = False) -> Path:
    (folder / ALGO_DIR).mkdir(parents=True)
    data = pickle.dumps({"weights": list(range(100))})
    (folder / ALGO_DIR / "state.pkl").write_bytes(data[: len(data) // 2] if truncated else data)
    progress = TrialProgress(iteration=iteration, metrics={"env_steps": 10.0 * iteration})
    (folder / STATE_FILE).write_text(progress.to_json())
    return folder


def test_newest_good_checkpoint_wins_and_a_truncated_one_is_skipped(tmp_path, capsys):
    _checkpoint(tmp_path / "checkpoint_000001", 1)
    _checkpoint(tmp_path / "checkpoint_000002", 2)
    _checkpoint(tmp_path / "checkpoint_000003", 3, truncated=True)
    (tmp_path / "checkpoint_000004").mkdir()  # written only in part: no state file
    candidates = _checkpoint_candidates(None, str(tmp_path))
    assert [p.name for p in candidates][:2] == ["checkpoint_000004", "checkpoint_000003"]
    first = Algo()
    algo, progress = restore_first_good(first, candidates, Algo)
    assert progress.iteration == 2 and algo.restored_from.endswith("checkpoint_000002/algorithm")
    assert first.stopped and algo is not first  # rebuilt after a failed restore
    out = capsys.readouterr().out
    assert "cannot restore" in out and "checkpoint_000003" in out and "UnpicklingError" in out
    assert "restored from" in out and "checkpoint_000002" in out


def test_nothing_to_restore_and_all_bad(tmp_path):
    algo = Algo()
    assert restore_first_good(algo, _checkpoint_candidates(None, str(tmp_path)), Algo) == (
        algo,
        None,
    )
    _checkpoint(tmp_path / "checkpoint_000001", 1, truncated=True)
    with pytest.raises(RuntimeError, match=r"no checkpoint of this trial restores: .*000001"):
        restore_first_good(Algo(), _checkpoint_candidates(None, str(tmp_path)), Algo)
