"""MLflow tracking against a real SQLite store in tmp_path (no Ray)."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform import tracking  # noqa: E402
from knife.platform.config import parse_trial_config  # noqa: E402
from knife.platform.tracking import (  # noqa: E402
    TrialLogger,
    redact_uri,
    resolve_tracking_uri,
    trial_tags,
)

CFG = parse_trial_config({"algorithm": "vdn", "env": "matrix:two_step", "steps": 100, "seed": 4})


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An MLflow SQLite file with its tables made (creating them takes seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    client("sqlite:///" + str(db)).search_experiments()
    return db


@pytest.fixture
def uri(tmp_path, monkeypatch, empty_store):
    """A per-test store: a copy of the template, at the default location in tmp_path."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "runs").mkdir()
    shutil.copyfile(empty_store, tmp_path / "runs" / "mlflow.db")
    return resolve_tracking_uri(tmp_path / "runs")


@pytest.fixture
def fresh_uri(tmp_path, monkeypatch):
    """A store whose database does not exist yet."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return resolve_tracking_uri(tmp_path / "fresh")


def client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


# --- URI ---------------------------------------------------------------------------------


def test_default_uri_is_absolute_sqlite_in_runs_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    expected = "sqlite:///" + str((tmp_path / "runs" / "mlflow.db").resolve())
    assert resolve_tracking_uri("runs") == expected
    assert expected.startswith("sqlite:////")  # four slashes: an absolute path


def test_uri_precedence_flag_over_env_over_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_tracking_uri(tmp_path) == "http://mlflow.example:5000"
    assert resolve_tracking_uri(tmp_path, "sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_redact_uri_drops_credentials():
    assert redact_uri("https://bob:s3cret@host:5000/p") == "https://host:5000/p"
    assert redact_uri("sqlite:////a/b.db") == "sqlite:////a/b.db"


def test_trial_tags():
    tags = trial_tags(CFG)
    assert {k: tags[k] for k in ("method", "algorithm", "env", "sequence", "seed", "task")} == {
        "method": "none",
        "algorithm": "vdn",
        "env": "matrix:two_step",
        "sequence": "none",
        "seed": "4",
        "task": "matrix:two_step",
    }
    assert tags["code_version"]


# --- one run -----------------------------------------------------------------------------


def test_run_params_tags_metrics_read_back(uri, tmp_path):
    long_value = "x" * 2000
    many = {f"p{i:03d}": i for i in range(250)}  # more than one 100-param batch
    with TrialLogger(uri, "exp-a", run_name="r1", tags=trial_tags(CFG)) as log:
        run_id = log.run_id
        log.log_params({**CFG.to_dict(), "long": long_value, "many": many})
        log.log_metrics(
            {
                "train/return": 1.0,
                "loss": 0.5,
                "none": None,
                "nan": float("nan"),
                "inf": float("inf"),
            },
            step=100,
        )
        log.log_metrics({"train/return": 2.0, "test/return": 7.5}, step=250)
        log.log_dict({"a": 1}, "summary.json")
        log.log_dict({"b": [1, 2]}, "cfg/config.yaml")
        (tmp_path / "note.txt").write_text("hi")
        log.log_artifact(tmp_path / "note.txt")

    c = client(uri)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert c.get_experiment(run.info.experiment_id).name == "exp-a"
    params = run.data.params
    assert params["training.lr"] == "0.001" and params["algorithm"] == "vdn"
    assert params["env_config"] == "{}" and params["plasticity.method"] == "none"
    assert len(params["long"]) == 500 and params["long"].endswith("...")
    assert params["many.p249"] == "249"
    assert run.data.tags["algorithm"] == "vdn" and run.data.tags["seed"] == "4"
    assert run.data.tags["method"] == "none" and "code_version" in run.data.tags
    history = c.get_metric_history(run_id, "train/return")
    assert [(m.step, m.value) for m in history] == [(100, 1.0), (250, 2.0)]
    assert [(m.step, m.value) for m in c.get_metric_history(run_id, "test/return")] == [(250, 7.5)]
    assert not {"none", "nan", "inf"} & set(run.data.metrics)
    arts = {a.path for a in c.list_artifacts(run_id)}
    assert {"summary.json", "cfg", "note.txt"} <= arts
    # Artifacts live beside the database, not under the current folder.
    assert run.info.artifact_uri.startswith((tmp_path / "runs" / "mlartifacts").as_uri())


def test_exception_ends_run_failed(uri):
    with pytest.raises(RuntimeError, match="boom"):
        with TrialLogger(uri, "exp-b") as log:
            run_id = log.run_id
            raise RuntimeError("boom")
    assert client(uri).get_run(run_id).info.status == "FAILED"


def test_keyboard_interrupt_ends_run_killed(uri):
    with pytest.raises(KeyboardInterrupt):
        with TrialLogger(uri, "exp-b") as log:
            run_id = log.run_id
            raise KeyboardInterrupt
    assert client(uri).get_run(run_id).info.status == "KILLED"


def test_two_runs_share_an_experiment(uri):
    ids = []
    for _ in range(2):
        with TrialLogger(uri, "shared") as log:
            ids.append(log.run_id)
    c = client(uri)
    exp = c.get_experiment_by_name("shared")
    assert {r.info.run_id for r in c.search_runs([exp.experiment_id])} == set(ids)


def test_logging_before_start_or_after_end_is_an_error(uri):
    log = TrialLogger(uri, "exp-c")
    with pytest.raises(RuntimeError, match="start"):
        log.log_metrics({"a": 1.0}, step=1)
    log.start()
    log.end()
    log.end()  # idempotent
    with pytest.raises(RuntimeError, match="ended"):
        log.log_metrics({"a": 1.0}, step=1)


# --- retries -----------------------------------------------------------------------------


def test_retry_on_database_locked(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert tracking.retry(flaky) == "ok" and len(calls) == 3


def test_retry_is_bounded_and_other_errors_pass_through(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def locked():
        calls.append(1)
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError, match="locked"):
        tracking.retry(locked)
    assert len(calls) == tracking.RETRIES

    calls.clear()

    def broken():
        calls.append(1)
        raise ValueError("something else")

    with pytest.raises(ValueError):
        tracking.retry(broken)
    assert len(calls) == 1


def _writer(uri: str, index: int, queue) -> None:
    # Runs in a child process: one trial's worth of writes against the shared store.
    try:
        with TrialLogger(
            uri, "concurrent", run_name=f"w{index}", tags={"writer": str(index)}
        ) as log:
            log.log_params({"training": {"lr": 0.001 * (index + 1)}, "index": index})
            for step in range(1, 31):
                log.log_metrics({"train/return": float(step), "loss": 1.0 / step}, step=step * 10)
            queue.put((index, log.run_id))
    except BaseException as exc:  # report, do not hang the parent
        queue.put((index, f"ERROR {type(exc).__name__}: {exc}"))


def test_concurrent_writers_on_a_fresh_sqlite_store(fresh_uri):
    uri = fresh_uri
    # A fresh database: the writers also race to create MLflow's tables.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(uri, i, queue)) for i in range(3)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in results.values() if r.startswith("ERROR")]
    assert not errors, errors
    c = client(uri)
    for index, run_id in results.items():
        run = c.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["index"] == str(index)
        history = c.get_metric_history(run_id, "train/return")
        assert sorted(m.step for m in history) == [s * 10 for s in range(1, 31)]


def test_experiments_are_model_training_experiments(uri):
    from knife.platform.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
    from knife.platform.ui import experiment_links

    with TrialLogger(uri, "kind"):
        pass
    c = client(uri)
    assert c.get_experiment_by_name("kind").tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # An older store's experiment, made without the tag: `knife ui` (its links) tags it.
    old = c.create_experiment("old_store_experiment")
    assert EXPERIMENT_KIND_TAG not in c.get_experiment(old).tags
    links = experiment_links(uri, "http://127.0.0.1:5000", None)
    assert any("old_store_experiment" in line for line in links)
    assert c.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # A kind the user chose is left alone.
    c.set_experiment_tag(old, EXPERIMENT_KIND_TAG, "genai_development")
    experiment_links(uri, "http://127.0.0.1:5000", None)
    assert c.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_store_object_experiments_history_and_ending(uri):
    import time

    from mlflow.entities import Metric

    from knife.platform.tracking import EXPERIMENT_KIND_TAG, MlflowStore

    store = MlflowStore(uri)
    assert store.experiment_id("store", create=False) is None
    exp_id = store.experiment_id("store")
    assert store.experiment_id("store") == exp_id  # found, not made twice
    assert store.client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG]
    run_id = store.client.create_run(exp_id).info.run_id
    now = int(time.time() * 1000)
    # Step 20 logged twice (a retried trial re-logs after its checkpoint): the latest wins.
    points = [Metric("x", 1.0, now, 10), Metric("x", 2.0, now, 20), Metric("x", 3.0, now + 1, 20)]
    store.client.log_batch(run_id, metrics=points)
    steps, values = store.history(run_id, "x")
    assert steps.tolist() == [10.0, 20.0] and values.tolist() == [1.0, 3.0]
    assert store.end_run(run_id, "KILLED", only_if_running=True)
    assert not store.end_run(run_id, "FAILED", only_if_running=True)  # already ended
    assert store.client.get_run(run_id).info.status == "KILLED"
