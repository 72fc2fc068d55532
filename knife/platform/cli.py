"""The `knife` command line (DESIGN 10). Subcommands: train (more come: sweep, ui, report).

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
        description="Train one QMIX/VDN trial from a YAML config; writes summary.json.",
    )
    p.add_argument("config", metavar="CONFIG", help="trial config YAML")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted path, e.g. --set training.lr=0.0005 "
        "(repeatable; the value is parsed as YAML)",
    )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="knife",
        description="KNIFE: plasticity loss in multi-agent value factorization (QMIX, VDN).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `knife`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
