"""Several trial processes writing one SQLite MLflow store at once (no Ray).

Each writer does what a sweep trial does (find-or-create its run by trial key, params,
a metric batch per iteration, tags, an artifact, end), all released at the same moment,
while a reader polls the store like the MLflow UI does. No write may fail with "database
is locked" and every write must land. What makes that so: the store in WAL mode (readers
do not block writers; `prepare_store`), SQLite's busy wait (MLflow sets 20 s per session),
and the bounded lock retry of every TrialLogger write for what is left; the number of
lock errors that reached the retry is printed.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform.sweep import prepare_store  # noqa: E402

WRITERS = 4
ITERATIONS = 25


def _writer(uri: str, index: int, queue, start) -> None:
    import knife.platform.tracking as tracking
    from knife.platform.trial_runner import SweepRunLogger

    locked = 0
    plain = tracking._is_locked

    def counting(exc: BaseException) -> bool:
        nonlocal locked
        hit = plain(exc)
        locked += hit
        return hit

    tracking._is_locked = counting  # count the collisions the retry absorbed
    start.wait(timeout=120)
    try:
        logger = SweepRunLogger(
            uri, "stress", run_name=f"w{index}", tags={"w": index}, trial_key=f"sweep/t{index}"
        )
        logger.start()
        logger.log_params({"training": {"lr": 0.001 * (index + 1)}, "index": index})
        for it in range(1, ITERATIONS + 1):
            batch = {f"m{k}": float(it * k) for k in range(60)}  # ~ a trial's curated set
            logger.log_metrics(batch, step=it * 50)
        logger.log_dict({"index": index}, "summary.json")
        logger.end("FINISHED")
        queue.put((index, logger.trial_key, locked, None))
    except BaseException as exc:  # report it; never hang the parent
        queue.put((index, None, locked, f"{type(exc).__name__}: {exc}"))


def _reader(uri: str, stop) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    while not stop.is_set():
        exp = client.get_experiment_by_name("stress")
        for run in client.search_runs([exp.experiment_id]):
            client.get_metric_history(run.info.run_id, "m7")


def test_concurrent_trial_writers_and_a_reader_on_one_sqlite_store(tmp_path):
    from mlflow import MlflowClient

    db = tmp_path / "runs" / "mlflow.db"
    uri = f"sqlite:///{db}"
    prepare_store(uri, "stress")  # as the sweep driver does: tables, experiment, WAL
    ctx = mp.get_context("spawn")
    queue, start, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(uri, i, queue, start)) for i in range(WRITERS)]
    reader = ctx.Process(target=_reader, args=(uri, stop))
    for p in (*procs, reader):
        p.start()
    start.set()  # all writers at once
    try:
        results = [queue.get(timeout=300) for _ in procs]
    finally:
        stop.set()
        for p in (*procs, reader):
            p.join(timeout=60)
    errors = [r[3] for r in results if r[3]]
    assert not errors, errors
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("stress")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == WRITERS
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "m7")
        assert sorted(m.step for m in history) == [i * 50 for i in range(1, ITERATIONS + 1)]
        assert len(run.data.metrics) == 60
    collisions = sum(r[2] for r in results)
    print(f"lock collisions absorbed by retries: {collisions}")
