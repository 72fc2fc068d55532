"""Sweep files: parsing, grid expansion, field-named errors, `knife sweep` bad input (no Ray)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from knife.platform import cli  # noqa: E402
from knife.platform.config import ConfigError, parse_trial_config  # noqa: E402
from knife.platform.sweep import stage_checkpoints  # noqa: E402
from knife.platform.sweep_config import (  # noqa: E402
    apply_sweep_overrides,
    describe,
    load_sweep_config,
    parse_sweep_config,
)
from knife.platform.tracking import trial_tags  # noqa: E402
from knife.platform.trial_loop import task_names  # noqa: E402

BASE_SWEEP = {
    "name": "unit",
    "base": {
        "algorithm": "qmix",
        "training": {"batch_size": 8, "learning_starts": 8, "buffer_size": 100},
        "evaluation": {"episodes": 2, "interval": 50},
    },
    "grid": {
        "methods": ["none", "knife"],
        "seeds": [0, 1, 2],
        "sequences": {
            "climb_pen": [
                {"env": "matrix:climbing", "steps": 100},
                {"env": "matrix:penalty", "env_config": {"k": -50}, "steps": 100},
            ],
            "opts": {
                "reanneal_epsilon": True,
                "tasks": [{"env": "matrix:climbing", "steps": 50}],
            },
        },
    },
    "tune": {"max_concurrent_trials": 2},
}


def sweep_with(**changes):
    raw = json.loads(json.dumps(BASE_SWEEP))
    for dotted, value in changes.items():
        node = raw
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return raw


DELETE = object()


def test_grid_expands_methods_seeds_sequences_in_a_stable_order():
    sweep = parse_sweep_config(BASE_SWEEP)
    trials = sweep.trials()
    assert len(trials) == 2 * 3 * 2 == sweep.num_trials()
    assert [t.label for t in trials[:3]] == [
        "none-s0-climb_pen",
        "none-s0-opts",
        "none-s1-climb_pen",
    ]
    last = trials[-1]
    assert last.label == "knife-s2-opts"
    assert last.config["plasticity"]["method"] == "knife" and last.config["seed"] == 2
    assert last.config["tasks"] == {
        "reanneal_epsilon": True,
        "tasks": [{"env": "matrix:climbing", "steps": 50}],
        "name": "opts",
    }
    first = parse_trial_config(trials[0].config)  # every expanded config is a valid trial
    assert first.tasks["name"] == "climb_pen" and first.steps == 200
    assert first.sequence_name == "climb_pen"
    assert sweep.experiment == "unit"  # default: the sweep name


def test_params_and_inline_axes():
    raw = sweep_with(
        grid__params={"training.lr": {"grid": [0.001, 0.0005]}},
        base__plasticity={"monitor": {"tau": {"choice": [0.1, 0.25]}}},
        grid__sequences=DELETE,
        base__env="matrix:two_step",
        base__steps=100,
        tune__num_samples=3,
    )
    sweep = parse_sweep_config(raw)
    grid = [a.target for a in sweep.grid_axes]
    assert grid == ["plasticity.method", "seed", "training.lr"]
    assert [a.target for a in sweep.choice_axes] == ["plasticity.monitor.tau"]
    assert "tau" not in sweep.base["plasticity"]["monitor"]  # the axis left base
    trials = sweep.trials()
    assert len(trials) == 2 * 3 * 2 and sweep.num_trials() == 36
    assert trials[1].overrides["training.lr"] == 0.0005
    # The report compares runs of one point but their method and seed (tag knife.point).
    points = {t.tags["knife.point"] for t in trials}
    assert points == {"lr=0.001", "lr=0.0005"}
    assert all(t.label.endswith(t.tags["knife.point"].split("=")[1]) for t in trials)
    text = describe(sweep)
    assert "plasticity.monitor.tau drawn per trial from [0.1, 0.25]" in text
    assert "36 trial(s)" in text


def test_exclude_leaves_out_matching_grid_points():
    raw = sweep_with(
        base__algorithm={"grid": ["qmix", "vdn"]},
        grid__exclude=[{"algorithm": "vdn", "methods": "knife"}, {"seeds": 2, "sequences": "opts"}],
    )
    sweep = parse_sweep_config(raw)
    trials = sweep.trials()
    combos = {
        (t.config["algorithm"], t.config["plasticity"]["method"], t.config["seed"],
         t.config["tasks"]["name"])
        for t in trials
    }  # fmt: skip
    assert not any(alg == "vdn" and m == "knife" for alg, m, _, _ in combos)
    assert not any(seed == 2 and seq == "opts" for _, _, seed, seq in combos)
    # 24 points, minus vdn-knife (6), minus seed 2 + opts (4), plus the one counted twice.
    assert len(trials) == 24 - 6 - 4 + 1 == sweep.num_trials()
    assert [t.index for t in trials] == list(range(len(trials)))
    assert "left out: algorithm=vdn, plasticity.method=knife" in describe(sweep)


def test_shipped_study_sweeps_leave_reborn_out_of_vdn():
    for name in ("study_matrix", "study_stag_hunt", "study_smax_race"):
        sweep = load_sweep_config(ROOT / "tune_configs" / f"{name}.yaml")
        trials = sweep.trials()
        pairs = {(t.config["algorithm"], t.config["plasticity"]["method"]) for t in trials}
        assert len(pairs) == 11 + 10 and ("vdn", "reborn") not in pairs
        assert {t.config["seed"] for t in trials} == {0, 1, 2, 3, 4}
        assert len(trials) == 21 * 5 and sweep.tune.max_concurrent_trials == 2


def test_shipped_smacv2_study_needs_starcraft_and_says_how_to_get_it():
    # The full-scale study runs in the GPU image; here (no smacv2) it stops before Ray starts.
    from knife.envs._smacv2_races import has_module

    path = ROOT / "tune_configs" / "study_smacv2_race.yaml"
    if has_module("smacv2"):
        assert len(load_sweep_config(path).trials()) == 21 * 5
        return
    with pytest.raises(ConfigError, match=r"grid\.sequences\.smacv2_race.*pip install git\+"):
        load_sweep_config(path)


def test_shipped_quickstart_is_valid_and_small():
    sweep = load_sweep_config(ROOT / "tune_configs" / "quickstart.yaml")
    trials = sweep.trials()
    methods = {t.config["plasticity"]["method"] for t in trials}
    assert methods == {"none", "reset", "redo", "knife"} and len(trials) == 10
    scratch = [t for t in trials if t.tags.get("knife.role") == "scratch"]
    assert len(scratch) == 2 and sweep.scratch  # its report can answer the gap question
    assert {t.config["seed"] for t in trials} == {0, 1}
    cfg = parse_trial_config(trials[0].config)
    assert len(cfg.tasks["tasks"]) >= 2
    assert all(t["env"].startswith("matrix:") for t in cfg.tasks["tasks"])
    assert sweep.tune.max_concurrent_trials == 2 and cfg.training.num_env_runners == 0


BAD = [
    (sweep_with(bogus=1), ["unknown top-level key 'bogus'", "allowed: name"]),
    (sweep_with(name="a b"), ["name: required", "folder-safe"]),
    (sweep_with(tune__max_concurent_trials=2), ["tune: unknown key", "max_concurrent_trials"]),
    (sweep_with(tune__max_concurrent_trials="two"), ["tune.max_concurrent_trials", "'two'"]),
    (sweep_with(tune__scheduler="pbt"), ["tune.scheduler: unknown 'pbt'", "fifo, asha"]),
    # a metric by its name before the chart sections
    (sweep_with(tune__metric="test_return"), ["tune.metric: 'test_return' is now 'test/return'"]),
    (sweep_with(tune__resources_per_trial={"tpu": 1}), ["tune.resources_per_trial", "tpu"]),
    (sweep_with(grid__methods=["none", "knifee"]), ["grid.methods[1]", "knifee", "knife"]),
    (sweep_with(grid__methods="none"), ["grid.methods: must be a non-empty list"]),
    (sweep_with(grid__seeds=[0, -1]), ["grid.seeds[1]: must be an integer >= 0"]),
    (sweep_with(grid__seeds=[0, 1.5]), ["grid.seeds[1]"]),
    (sweep_with(grid__sequence={}), ["grid: unknown key 'sequence'", "did you mean 'sequences'"]),
    (
        sweep_with(grid__sequences={"bad": [{"env": "matrix:nope", "steps": 10}]}),
        ["grid.sequences.bad", "tasks[0].env", "matrix:nope"],
    ),
    (
        sweep_with(grid__sequences={"bad": [{"env": "matrix:climbing", "steps": -1}]}),
        ["grid.sequences.bad", "tasks[0].steps"],
    ),
    (sweep_with(base__training={"lr": "fast"}), ["base.training.lr: must be a number > 0"]),
    (sweep_with(base__training={"lrr": 1}), ["base.training: unknown key 'lrr'"]),
    (sweep_with(base__env="matrix:climbing"), ["base:", "grid.sequences sets `tasks`"]),
    (
        sweep_with(grid__params={"training.lr": {"grid": [0.001, -1]}}),
        ["grid.params.training.lr[1] (training.lr)", "> 0"],
    ),
    (sweep_with(grid__params={"training.lr": {"range": [1, 2]}}), ["{grid: [values]}"]),
    (sweep_with(grid__params={"seed": [1, 2]}), ["use grid.seeds"]),
    (sweep_with(plugins=["no_such_module_xyz"]), ["plugins[0]", "no_such_module_xyz"]),
    (sweep_with(mlflow={"experiment": ""}), ["mlflow.experiment"]),
    (sweep_with(grid__exclude=[{"method": "knife"}]), ["grid.exclude[0]: unknown key 'method'"]),
    (
        sweep_with(grid__exclude=[{"methods": "redo"}]),
        ["grid.exclude[0].methods: 'redo' is not on that axis", "allowed: none, knife"],
    ),
    (
        sweep_with(grid__exclude=[{"methods": "none"}, {"methods": "knife"}]),
        ["grid.exclude: leaves no trial to run"],
    ),
]


@pytest.mark.parametrize("raw,expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_sweeps_name_the_field(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_sweep_config(raw)
    msg = str(info.value)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_overrides():
    raw = apply_sweep_overrides(BASE_SWEEP, ["tune.max_concurrent_trials=1", "grid.seeds=[5]"])
    sweep = parse_sweep_config(raw)
    assert sweep.tune.max_concurrent_trials == 1 and len(sweep.trials()) == 2 * 2
    with pytest.raises(ConfigError, match="--set: unknown key 'tuen'"):
        apply_sweep_overrides(BASE_SWEEP, ["tuen.x=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_sweep_overrides(BASE_SWEEP, ["tune"])


# --- the command line: bad input exits non-zero, says why, writes nothing --------------


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns


CLI_BAD = {
    "unknown key": (sweep_with(tune__bogus=1), [], ["tune: unknown key 'bogus'"]),
    "wrong type": (sweep_with(tune__num_samples="many"), [], ["tune.num_samples", "'many'"]),
    "unknown method": (sweep_with(grid__methods=["dropout"]), [], ["grid.methods[0]"]),
    "unreachable address": (
        BASE_SWEEP,
        ["--address", "ADDRESS"],
        ["--address", "no Ray cluster reachable", "127.0.0.1"],
    ),
    "nothing to resume": (BASE_SWEEP, ["--resume"], ["--resume: no sweep 'unit' to resume"]),
}


@pytest.mark.parametrize("case", list(CLI_BAD))
def test_sweep_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    raw, extra, expected = CLI_BAD[case]
    extra = [f"127.0.0.1:{_closed_port()}" if a == "ADDRESS" else a for a in extra]
    runs = tmp_path / "runs"
    rc = cli.main(["sweep", str(_write(tmp_path, raw)), "--runs-dir", str(runs), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ")
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"
    assert not runs.exists()  # no runs folder, no store, no Tune folder


def test_sweep_bad_input_never_starts_ray_and_dry_run_writes_nothing(tmp_path):
    """In a fresh interpreter: errors and --dry-run import neither ray nor mlflow."""
    good = _write(tmp_path, BASE_SWEEP)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sweep_with(grid__methods=["knifee"])))
    runs = tmp_path / "runs"
    script = textwrap.dedent(
        f"""
        import json, sys
        from knife.platform.cli import main
        codes = [main(["sweep", {str(bad)!r}, "--runs-dir", {str(runs)!r}]),
                 main(["sweep", {str(good)!r}, "--runs-dir", {str(runs)!r}, "--dry-run"])]
        print(json.dumps({{"codes": codes, "ray": "ray" in sys.modules,
                          "mlflow": "mlflow" in sys.modules}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    assert out == {"codes": [2, 0], "ray": False, "mlflow": False}
    assert "grid.methods[0] (plasticity.method): unknown 'knifee'" in proc.stderr
    listing = "\n".join(lines[:-1])
    assert "12 trial(s)" in listing and "knife-s2-opts" in listing
    assert not runs.exists()


def test_tracking_uri_with_credentials_is_refused(tmp_path, capsys):
    path = _write(tmp_path, BASE_SWEEP)
    rc = cli.main(
        [
            "sweep",
            str(path),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--tracking-uri",
            "http://alice:s3cret@127.0.0.1:5999",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "MLFLOW_TRACKING_USERNAME" in err and "s3cret" not in err
    assert not (tmp_path / "runs").exists()


def test_check_address_accepts_forms_and_local(monkeypatch):
    from knife.platform.sweep import check_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_address(None)
    check_address("local")
    check_address("auto")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        check_address(f"127.0.0.1:{port}")
        check_address(f"ray://127.0.0.1:{port}")
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        check_address(None)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        check_address("127.0.0.1:notaport")


def test_cli_lists_the_platform_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "sweep", "ui", "report"):
        assert command in out
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    out = capsys.readouterr().out
    for flag in ("--address", "--resume", "--dry-run", "--set", "--runs-dir", "--tracking-uri"):
        assert flag in out


def test_ui_binds_loopback_and_needs_a_store(tmp_path, capsys, monkeypatch):
    from knife.platform.ui import server_command

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cmd = server_command("sqlite:////x/runs/mlflow.db", "127.0.0.1", 5123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////x/runs/mlflow.db"
    assert cmd[cmd.index("--artifacts-destination") + 1] == "/x/runs/mlartifacts"
    # no store yet: a clear message, nothing started, nothing created
    rc = cli.main(["ui", "--runs-dir", str(tmp_path / "none"), "--port", "5999"])
    assert rc == 2 and "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    # a tracking server: say where it is, start nothing
    rc = cli.main(["ui", "--tracking-uri", "http://127.0.0.1:5999"])
    assert rc == 0 and "http://127.0.0.1:5999" in capsys.readouterr().out


def test_trial_gpu_request_is_judged_by_the_cluster_not_the_driver():
    # The sweep driver often runs on a GPU-less head: `device: cuda` must still ask Ray for a
    # GPU per trial (the trial resolves the device where it lands), and `auto` follows the
    # cluster's resources (none here: Ray is not running in this test).
    from knife.platform.sweep import trial_device, trial_resources
    from knife.platform.trial_runner import META

    def request(device, override=None):
        config = {
            META: {"resources_per_trial": override},
            "base": {
                "algorithm": "qmix",
                "env": "matrix:two_step",
                "steps": 100,
                "training": {"device": device, "num_env_runners": 2},
            },
            "variant": {"label": "x", "overrides": {}},
        }
        return [dict(b) for b in trial_resources(config).bundles]

    assert trial_device("cuda") == "cuda" and trial_device("auto") == "cpu"
    assert request("cuda") == [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert request("auto") == [{"CPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]
    assert request("cpu", {"cpu": 2, "gpu": 1})[0] == {"CPU": 2.0, "GPU": 1.0}


SCRATCH_SWEEP = {
    "name": "scr",
    "base": {
        "algorithm": "qmix",
        "training": {"epsilon_anneal_steps": 300, "batch_size": 8},
        "evaluation": {"interval": 50, "episodes": 2},
    },
    "grid": {
        "methods": ["none", "knife"],
        "seeds": [0, 1],
        "scratch": True,
        "sequences": {
            "cp": [
                {"env": "matrix:climbing", "steps": 400, "name": "climbing"},
                {"env": "matrix:penalty", "env_config": {"k": -100.0}, "steps": 600},
            ]
        },
    },
}


def test_scratch_reference_has_the_sequential_tasks_schedule():
    """Issue 16: one fresh network per seed and task k >= 1, shared by the methods, with
    the sequence's seed, budget, epsilon schedule, buffer handling and test settings."""
    sweep = parse_sweep_config(SCRATCH_SWEEP)
    trials = sweep.trials()
    scratch = [t for t in trials if t.tags.get("knife.role") == "scratch"]
    sequential = [t for t in trials if not t.tags]
    assert len(sequential) == 4 and [t.label for t in scratch] == [
        "scratch-s0-cp-t1",
        "scratch-s1-cp-t1",
    ]
    for ref in scratch:
        cfg = parse_trial_config(ref.config)
        assert ref.tags["knife.scratch_task"] == "1"
        for seq in (t for t in sequential if t.config["seed"] == ref.config["seed"]):
            seq_cfg = parse_trial_config(seq.config)
            # the same task, budget, seed, training (epsilon schedule) and test protocol
            assert cfg.tasks["tasks"] == [seq_cfg.tasks["tasks"][1]]
            assert cfg.steps == seq_cfg.tasks["tasks"][1]["steps"] == 600
            assert cfg.seed == seq_cfg.seed
            assert cfg.training == seq_cfg.training and cfg.evaluation == seq_cfg.evaluation
            assert cfg.sequence_name == seq_cfg.sequence_name == "cp"
            # the study protocol: the sequential run re-anneals epsilon and starts task 1 with
            # an empty buffer, as a fresh run does
            assert seq_cfg.tasks["reanneal_epsilon"] is True
            assert seq_cfg.tasks["buffer_on_switch"] == "flush"
        assert cfg.plasticity["method"] == "none"


def test_repeated_tasks_share_one_scratch_reference_per_seed():
    """tasks.repeat 2 on [climbing, penalty]: climbing, penalty, climbing#2, penalty#2. The
    reference of penalty (index 1) also serves penalty#2 (3); climbing#2 (2) gets its own
    (task 0 has none); the tags say every index a reference serves."""
    raw = json.loads(json.dumps(SCRATCH_SWEEP))
    raw["grid"]["sequences"]["cp"] = {"repeat": 2, "tasks": raw["grid"]["sequences"]["cp"]}
    trials = parse_sweep_config(raw).trials()
    sequential = [t for t in trials if "knife.role" not in t.tags]
    scratch = [t for t in trials if t.tags.get("knife.role") == "scratch"]
    assert len(sequential) == 4 and len(trials) == 4 + 2 * 2
    for t in sequential:
        # The per-task names (the task/<i>/name run tags) say which task and which visit.
        cfg = parse_trial_config(t.config)
        assert task_names(cfg) == {0: "climbing", 1: "matrix:penalty", 2: "climbing#2",
                                   3: "matrix:penalty#2"}  # fmt: skip
        assert trial_tags(cfg)["task"] == (
            "climbing -> matrix:penalty -> climbing#2 -> matrix:penalty#2"
        )
    assert [(t.label, t.tags["knife.scratch_task"], t.tags["knife.scratch_tasks"])
            for t in scratch] == [
        ("scratch-s0-cp-t1", "1", "1,3"),
        ("scratch-s0-cp-t2", "2", "2"),
        ("scratch-s1-cp-t1", "1", "1,3"),
        ("scratch-s1-cp-t2", "2", "2"),
    ]  # fmt: skip
    seq_tasks = parse_trial_config(sequential[0].config).tasks["tasks"]
    for ref in scratch:
        cfg = parse_trial_config(ref.config)
        served = [int(k) for k in ref.tags["knife.scratch_tasks"].split(",")]
        for k in served:  # what it trains on is each served task but the name
            same = {key: v for key, v in seq_tasks[k].items() if key != "name"}
            assert {key: v for key, v in cfg.tasks["tasks"][0].items() if key != "name"} == same
        assert cfg.tasks["tasks"] == [seq_tasks[served[0]]]
    # Without repeats every reference serves its own index only.
    plain = parse_sweep_config(SCRATCH_SWEEP).trials()
    assert [t.tags["knife.scratch_tasks"] for t in plain if "knife.role" in t.tags] == ["1", "1"]


def test_scratch_refuses_a_protocol_that_would_not_match():
    raw = json.loads(json.dumps(SCRATCH_SWEEP))
    raw["grid"]["sequences"]["cp"] = {
        "reanneal_epsilon": False,
        "tasks": raw["grid"]["sequences"]["cp"],
    }
    with pytest.raises(
        ConfigError, match=r"grid.sequences.cp.reanneal_epsilon: False with grid.scratch"
    ):
        parse_sweep_config(raw)
    raw = json.loads(json.dumps(SCRATCH_SWEEP))
    raw["grid"]["scratch"] = "yes"
    with pytest.raises(ConfigError, match="grid.scratch: must be true or false"):
        parse_sweep_config(raw)


def test_branch_prefix_trains_task_0_once_per_seed_and_branches_every_method():
    """grid.branch prefix: one prefix trial per seed (method none, task 0 alone, to its
    end), then every method as a branch of it; scratch references run with the prefixes."""
    raw = json.loads(json.dumps(SCRATCH_SWEEP))
    raw["grid"]["branch"] = "prefix"
    sweep = parse_sweep_config(raw)
    assert sweep.stages() == ("prefix", "branch")
    trials = sweep.trials()
    by_stage = {s: [t for t in trials if t.stage == s] for s in sweep.stages()}
    assert [t.label for t in by_stage["prefix"]] == [
        "prefix-s0-cp",
        "prefix-s1-cp",
        "scratch-s0-cp-t1",
        "scratch-s1-cp-t1",
    ]
    assert sorted(t.label for t in by_stage["branch"]) == [
        "knife-s0-cp",
        "knife-s1-cp",
        "none-s0-cp",
        "none-s1-cp",
    ]
    prefixes = {t.label: t for t in by_stage["prefix"]}
    for branch in by_stage["branch"]:
        prefix = prefixes[branch.branch_of]
        cfg, pre = parse_trial_config(branch.config), parse_trial_config(prefix.config)
        assert prefix.tags == {"knife.role": "prefix", "method": "prefix"}
        assert pre.plasticity["method"] == "none" and pre.seed == cfg.seed
        assert pre.tasks["tasks"] == cfg.tasks["tasks"][:1]  # task 0, its whole budget
        assert pre.steps == 400 and cfg.steps == 1000
        assert pre.training == cfg.training and pre.evaluation == cfg.evaluation
        for key in ("reanneal_epsilon", "buffer_on_switch", "target_on_switch"):
            assert pre.tasks[key] == cfg.tasks[key], key
    assert [t.label for t in trials if t.branch_source] == ["prefix-s0-cp", "prefix-s1-cp"]
    assert len({t.label for t in trials}) == len(trials) == 8
    unbranched = parse_sweep_config(SCRATCH_SWEEP)
    assert unbranched.stages() == ("main",) and {t.stage for t in unbranched.trials()} == {"main"}


def test_branch_every_switch_continues_none_at_every_switch_for_one_task():
    """grid.branch every_switch: per seed one prefix (task 0), then per switch k a stage in
    which every method restores none's state at the end of task k-1 and trains task k alone;
    none's branch of k is what every branch of k+1 continues."""
    raw = json.loads(json.dumps(SCRATCH_SWEEP))
    raw["grid"]["branch"] = "every_switch"
    raw["grid"]["seeds"] = [0]
    raw["grid"]["sequences"]["cp"].append({"env": "matrix:climbing", "steps": 200})
    sweep = parse_sweep_config(raw)
    assert sweep.stages() == ("prefix", "switch1", "switch2")
    trials = sweep.trials()
    by_label = {t.label: t for t in trials}
    full = parse_trial_config(by_label["none-s0-cp-sw2"].config).tasks["tasks"]
    assert [t["steps"] for t in full] == [400, 600, 200]  # the whole sequence
    assert [(t.label, t.stage, t.branch_of) for t in trials if t.stage.startswith("switch")] == [
        ("none-s0-cp-sw1", "switch1", "prefix-s0-cp"),
        ("none-s0-cp-sw2", "switch2", "none-s0-cp-sw1"),
        ("knife-s0-cp-sw1", "switch1", "prefix-s0-cp"),
        ("knife-s0-cp-sw2", "switch2", "none-s0-cp-sw1"),
    ]
    assert {t.label for t in trials if t.stage == "prefix"} == {
        "prefix-s0-cp",
        "scratch-s0-cp-t1",
        "scratch-s0-cp-t2",
    }
    # Only what a later stage continues tags its end state: the prefix and none's sw1.
    assert sorted(t.label for t in trials if t.branch_source) == ["none-s0-cp-sw1", "prefix-s0-cp"]
    for k in (1, 2):
        for method in ("none", "knife"):
            branch = by_label[f"{method}-s0-cp-sw{k}"]
            cfg = parse_trial_config(branch.config)
            parent = parse_trial_config(by_label[branch.branch_of].config)
            assert branch.tags["knife.branch_task"] == str(k)
            assert cfg.plasticity["method"] == method
            # The sequence cut after task k: the branch trains task k and stops.
            assert cfg.tasks["tasks"] == full[: k + 1]
            assert cfg.steps == [400, 1000, 1200][k]
            # Its parent is none, one task shorter, with the same schedule.
            assert parent.plasticity["method"] == "none"
            assert parent.tasks["tasks"] == cfg.tasks["tasks"][:k]
            assert parent.training == cfg.training and parent.seed == cfg.seed
    raw["grid"]["methods"] = ["knife"]
    with pytest.raises(ConfigError, match="grid.branch: every_switch .* add none to grid.methods"):
        parse_sweep_config(raw).trials()


def _finished(label: str, source: bool | None) -> SimpleNamespace:
    """What Tune's ResultGrid gives stage_checkpoints for one finished trial."""
    variant = {"label": label} if source is None else {"label": label, "branch_source": source}
    return SimpleNamespace(
        config={"variant": variant},
        checkpoint=SimpleNamespace(path=f"/ckpt/{label}"),
        metrics={"mlflow_run_id": f"run-{label}"},
    )


def test_stage_checkpoints_reads_the_branch_sources_or_every_trial_of_an_older_sweep():
    stage = [_finished("prefix-s0-cp", True), _finished("scratch-s0-cp-t1", False)]
    assert stage_checkpoints(stage) == {
        "prefix-s0-cp": {"checkpoint": "/ckpt/prefix-s0-cp", "parent_run_id": "run-prefix-s0-cp"}
    }
    # A sweep started before trials carried branch_source resumes with its recorded configs.
    older = [_finished("prefix-s0-cp", None), _finished("scratch-s0-cp-t1", None)]
    assert sorted(stage_checkpoints(older)) == ["prefix-s0-cp", "scratch-s0-cp-t1"]
    lost = _finished("prefix-s1-cp", True)
    lost.checkpoint = None
    with pytest.raises(RuntimeError, match="prefix-s1-cp finished without a checkpoint"):
        stage_checkpoints([lost])


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"branch": "every"},
            "grid.branch: must be one of none, prefix, every_switch, got 'every'",
        ),
        (
            {"branch": "prefix", "params": {"training.lr": {"choice": [0.001, 0.0005]}}},
            "grid.params.training.lr: a {choice: ...} axis with grid.branch prefix; a branch "
            "must have its parent's values: make it a {grid: ...} axis",
        ),
        (
            {"branch": "every_switch", "tune": {"num_samples": 2}},
            "tune.num_samples: 2 with grid.branch every_switch; must be 1",
        ),
        (
            {"branch": "prefix", "sequences": {"one": [{"env": "matrix:climbing", "steps": 50}]}},
            "grid.branch: prefix needs sequences of 2 tasks or more; grid.sequences.one has 1",
        ),
    ],
)
def test_bad_branch_is_refused_by_field(change, expected):
    raw = json.loads(json.dumps(SCRATCH_SWEEP))
    del raw["grid"]["scratch"]
    change = dict(change)
    raw["tune"] = change.pop("tune", {})
    raw["grid"].update(change)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_sweep_config(raw)
