"""The `knife` command line (DESIGN 10). Subcommands: train, sweep, ui, report, config.

Imports stay light at module level (no ray, no mlflow): `knife train bad.yaml` must answer
in about a second, and a config error must never start Ray.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from knife.platform.config import ConfigError

EXIT_CONFIG_ERROR = 2  # argparse uses 2 for usage errors too


def default_runs_dir() -> Path:
    """$KNIFE_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("KNIFE_RUNS_DIR") or "runs")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run one trial (no Tune) and log it to MLflow",
        description="Train one QMIX/VDN trial from a YAML config; writes summary.json. "
        "SIGTERM or Ctrl-C stops it after the current iteration with a checkpoint (a second "
        "one stops at once); `knife train --resume RUN_DIR` continues it.",
    )
    p.add_argument("config", metavar="CONFIG", nargs="?", help="trial config YAML")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        type=Path,
        default=None,
        help="continue this run folder (runs/<experiment>/<name>) from its checkpoint, in "
        "the same MLflow run, to its budget",
    )
    _add_set_flag(p, "a config value", "training.lr=0.0005")
    _add_store_flags(p)
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: train)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else embedded Ray)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from knife.platform.config import load_trial_config

    if args.resume is not None:
        refused = [
            flag
            for flag, given in (
                ("CONFIG", args.config),
                ("--set", args.overrides),
                ("--experiment", args.experiment),
                ("--runs-dir", args.runs_dir),
            )
            if given
        ]
        if refused:
            raise ConfigError(
                f"--resume: continues the run as it was started; drop {', '.join(refused)}"
            )
        from knife.platform.train import resume_trial

        resume_trial(
            args.resume,
            tracking_uri=args.tracking_uri,
            progress=not args.no_progress,
            address=args.address,
        )
        return 0
    if args.config is None:
        raise ConfigError("CONFIG: give a trial config YAML (or --resume RUN_DIR)")
    cfg = load_trial_config(args.config, args.overrides)  # ConfigError -> exit 2, no Ray
    from knife.platform.train import run_trial  # heavy imports only after validation

    run_trial(
        cfg,
        runs_dir=args.runs_dir or default_runs_dir(),
        tracking_uri=args.tracking_uri,
        experiment=args.experiment,
        progress=not args.no_progress,
        address=args.address,
    )
    return 0


def _add_set_flag(p: argparse.ArgumentParser, what: str, example: str) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what} by dotted path, e.g. --set {example} "
        "(repeatable; the value is parsed as YAML)",
    )


def _add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="runs folder (default: $KNIFE_RUNS_DIR or ./runs)",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
        "sqlite:///<runs-dir>/mlflow.db)",
    )


def _store_args(args: argparse.Namespace) -> list[str]:
    """The store flags as given (for advice that repeats the command; no credentials)."""
    from knife.platform.tracking import redact_uri

    out = []
    for flag, value in (
        ("--runs-dir", args.runs_dir),
        ("--tracking-uri", args.tracking_uri and redact_uri(args.tracking_uri)),
        ("--storage-path", getattr(args, "storage_path", None)),
    ):
        if value:
            out += [flag, str(value)]
    return out


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a Ray Tune sweep (methods x seeds x sequences x params) with MLflow logging",
        description="Run the grid of a sweep file with Ray Tune: one MLflow run per trial in "
        "the experiment named by the file; retries failed trials, keeps checkpoints, "
        "--resume continues an interrupted sweep.",
    )
    p.add_argument("file", metavar="FILE", help="sweep YAML, e.g. tune_configs/quickstart.yaml")
    _add_set_flag(p, "a sweep-file value", "tune.max_concurrent_trials=1")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (default: $RAY_ADDRESS, else embedded Ray sized to this machine)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p.add_argument(
        "--restart-trial",
        dest="restart",
        action="append",
        default=[],
        metavar="NAME",
        help="with --resume: start this unfinished trial (its grid-point label, e.g. "
        "knife-s3) again from scratch; its checkpoints are set aside and its old MLflow run "
        "kept, KILLED (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the expanded trial list and exit")
    _add_store_flags(p)
    p.add_argument(
        "--storage-path",
        default=None,
        help="where Tune keeps trial folders and checkpoints: a folder every cluster node "
        "sees (NFS) or a URI (s3://bucket/prefix, gs://...) (default: $KNIFE_STORAGE_PATH, "
        "else the runs folder)",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of embedded Ray (default: all)")
    p.add_argument("--quiet", action="store_true", help="no Tune progress table")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from knife.platform.sweep_config import describe, load_sweep_file

    sweep = load_sweep_file(args.file, args.overrides)  # ConfigError -> exit 2, no Ray
    if args.dry_run:
        print(describe(sweep))
        return 0
    from knife.platform.sweep import SweepStopped, format_outcomes, run_sweep

    command = " ".join(["knife sweep", args.file, *_store_args(args)])

    try:
        outcomes = run_sweep(
            sweep,
            args.runs_dir or default_runs_dir(),
            tracking_uri=args.tracking_uri,
            address=args.address,
            resume=args.resume,
            verbose=0 if args.quiet else 1,
            num_cpus=args.num_cpus,
            storage_path=args.storage_path,
            restart=args.restart,
        )
    except SweepStopped as stop:
        print(format_outcomes(stop.outcomes, sweep.experiment, command), flush=True)
        print(f"stopped ({stop}): continue with the same command and --resume", file=sys.stderr)
        return stop.exit_code
    print(format_outcomes(outcomes, sweep.experiment, command), flush=True)
    return 0 if all(o.status == "TERMINATED" for o in outcomes) else 1


def _add_ui(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="serve the MLflow UI on 127.0.0.1 over the runs' store",
        description="Start `mlflow server` on 127.0.0.1 against the same store that "
        "`knife train` and `knife sweep` write, and print how to compare runs.",
    )
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default: 127.0.0.1; anything else is reachable from "
        "other machines, without authentication)",
    )
    p.add_argument("--experiment", default=None, help="print the link to this experiment only")
    _add_store_flags(p)
    p.set_defaults(func=_cmd_ui)


def _cmd_ui(args: argparse.Namespace) -> int:
    from knife.platform.tracking import resolve_tracking_uri
    from knife.platform.ui import serve

    uri = resolve_tracking_uri(args.runs_dir or default_runs_dir(), args.tracking_uri)
    return serve(uri, host=args.host, port=args.port, experiment=args.experiment)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="aggregate a sweep's runs across seeds: IQM + 95%% bootstrap CIs, tables, plots",
        description="Read the finished MLflow runs of EXPERIMENT and write, per task and "
        "method, the interquartile mean and 95%% stratified bootstrap interval of the final "
        "test return (and win rate) and of the area under the test curve, as report.md, "
        "summary.csv and PNG plots; log them to MLflow as a report run.",
    )
    p.add_argument("experiment", metavar="EXPERIMENT", help="MLflow experiment (= sweep name)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <runs-dir>/reports/EXPERIMENT)",
    )
    _add_store_flags(p)
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default: 0)")
    p.add_argument(
        "--final-tests",
        type=int,
        default=None,
        help="paired tables: 'final' = the mean of a task's last N greedy tests (default: 3)",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="paired tables: equivalence margin, normalized (default: 0.1)",
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not log a report run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from knife.platform.paired_tables import EQUIVALENCE_MARGIN, FINAL_TESTS
    from knife.platform.report import REPORT_SUFFIX, build_report
    from knife.platform.tracking import resolve_tracking_uri

    if args.reps < 100:
        raise ConfigError(f"--reps: must be at least 100, got {args.reps}")
    final_tests = FINAL_TESTS if args.final_tests is None else args.final_tests
    margin = EQUIVALENCE_MARGIN if args.margin is None else args.margin
    if final_tests < 1:
        raise ConfigError(f"--final-tests: must be at least 1, got {final_tests}")
    if not margin > 0:
        raise ConfigError(f"--margin: must be > 0 (normalized units), got {margin}")
    runs_dir = args.runs_dir or default_runs_dir()
    uri = resolve_tracking_uri(runs_dir, args.tracking_uri)
    out = args.out or Path(runs_dir) / "reports" / args.experiment
    result = build_report(
        args.experiment,
        uri,
        out,
        reps=args.reps,
        seed=args.seed,
        final_tests=final_tests,
        margin=margin,
        log_to_mlflow=not args.no_mlflow,
        progress=not args.no_progress,
    )
    print((result.out_dir / "report.md").read_text())
    print(f"wrote {len(result.files)} files to {result.out_dir}")
    if result.mlflow_run_id:
        where = args.experiment + REPORT_SUFFIX
        print(f"logged as MLflow run {result.mlflow_run_id} in experiment {where!r}")
    return 0


def _add_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="print every trial-config key with its default, allowed values and meaning",
        description="Print the trial-config keys (generated from the code's declarations): "
        "all of them, or one key or section, e.g. `knife config training.td_lambda`, "
        "`knife config plasticity.options.knife`.",
    )
    p.add_argument("key", nargs="?", default="", metavar="KEY", help="a key or section")
    p.add_argument("--markdown", action="store_true", help="all keys as a Markdown table")
    p.set_defaults(func=_cmd_config)


def _cmd_config(args: argparse.Namespace) -> int:
    from knife.platform.config_doc import explain, markdown

    print(markdown() if args.markdown else explain(args.key), end="" if args.markdown else "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knife",
        description="KNIFE: plasticity loss in multi-agent value factorization (QMIX, VDN).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_sweep(sub)
    _add_ui(sub)
    _add_report(sub)
    _add_config(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `knife`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt as exc:
        from knife.platform.preemption import Preempted

        if isinstance(exc, Preempted):
            print(f"stopped ({exc}): the run is marked KILLED", file=sys.stderr)
            return exc.exit_code
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
