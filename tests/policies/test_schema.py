"""The schema (knife.policies.schema) is the one place a default lives: a changed default
reaches a YAML trial, QMixConfig() and the built RLModule; a Python-API value out of range
fails with the YAML message; `knife config` is generated from the same declarations."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from knife.fields import ConfigError, field_names
from knife.platform.config import parse_trial_config
from knife.policies.schema import ALGORITHM_KEYS, TrainingConfig, defaults

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json
from knife.platform.algorithm_factory import algorithm_config
from knife.platform.config import parse_trial_config
from knife.policies import QMixConfig
from knife.policies.rl_module import QMixRLModule
from knife.envs import make

trial = parse_trial_config({"algorithm": "qmix", "env": "matrix:two_step", "steps": 10})
env = make("matrix:two_step")
config = algorithm_config(trial)
module = QMixRLModule(
    observation_space=env.observation_space,
    action_space=env.action_space,
    inference_only=False,
    model_config=config.model_config,
)
print(json.dumps({
    "yaml": trial.training.agent_hidden_dim,
    "python": QMixConfig().agent_hidden_dim,
    "module": module.agent.fc1[0].out_features,
}))
"""


def test_one_changed_default_reaches_yaml_python_api_and_the_module(tmp_path):
    # A copy of the package with one number changed in the schema's declaration.
    shutil.copytree(
        ROOT / "knife", tmp_path / "knife", ignore=shutil.ignore_patterns("__pycache__")
    )
    schema = tmp_path / "knife" / "policies" / "schema.py"
    text = schema.read_text()
    declaration = re.compile(r"(agent_hidden_dim: int = spec\(\s*)64,")
    assert len(declaration.findall(text)) == 1
    schema.write_text(declaration.sub(r"\g<1>48,", text))
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"yaml": 48, "python": 48, "module": 48}
    # ...and this process (the unchanged package) still has 64 everywhere.
    assert TrainingConfig().agent_hidden_dim == 64 == defaults()["agent_hidden_dim"]


@pytest.mark.parametrize(
    "key, value",
    [("td_lambda", 1.5), ("lr", -1.0), ("batch_size", 0), ("optimizer", "sgd"), ("device", "tpu")],
)
def test_python_api_gets_the_yaml_message(key, value):
    from knife.platform.algorithm_factory import algorithm_config
    from knife.policies import QMixConfig

    with pytest.raises(ConfigError) as from_yaml:
        parse_trial_config(
            {"algorithm": "qmix", "env": "matrix:two_step", "steps": 10, "training": {key: value}}
        )
    if key == "device":  # the platform's key: no QMixConfig attribute, checked by the schema
        assert str(from_yaml.value).startswith("training.device: unknown 'tpu'")
        return
    config = QMixConfig().environment("matrix:two_step").training(**{key: value})
    with pytest.raises(ConfigError) as from_python:
        config.validate()
    assert str(from_python.value) == str(from_yaml.value)
    assert str(from_python.value).startswith(f"training.{key}: ")
    # A valid trial builds a config that validates.
    trial = parse_trial_config({"algorithm": "qmix", "env": "matrix:two_step", "steps": 10})
    algorithm_config(trial).validate()


def test_cross_field_rule_is_the_same_on_both_paths():
    from knife.policies import QMixConfig

    with pytest.raises(ConfigError) as from_yaml:
        parse_trial_config(
            {
                "algorithm": "vdn",
                "env": "matrix:two_step",
                "steps": 10,
                "training": {"batch_size": 64, "learning_starts": 64, "buffer_size": 32},
            }
        )
    config = QMixConfig().environment("matrix:two_step")
    config.training(batch_size=64, learning_starts=64, buffer_size=32)
    with pytest.raises(ConfigError) as from_python:
        config.validate()
    assert str(from_python.value) == str(from_yaml.value)
    assert "training.buffer_size: must be >= training.batch_size (64)" in str(from_yaml.value)


def test_qmix_config_takes_every_default_from_the_schema():
    from knife.policies import QMixConfig

    config = QMixConfig()
    for key, value in defaults().items():
        assert getattr(config, key) == value, key
    assert set(ALGORITHM_KEYS) >= {"algorithm", "td_lambda", "test_interval", "lr"}


def test_rl_module_has_no_fallback_defaults():
    from knife.envs import make
    from knife.policies.rl_module import QMixRLModule

    env = make("matrix:two_step")
    with pytest.raises(ValueError, match="model_config lacks .*agent_hidden_dim"):
        QMixRLModule(
            observation_space=env.observation_space,
            action_space=env.action_space,
            inference_only=False,
            model_config={"algorithm": "qmix"},
        )


def test_knife_config_is_generated_and_docs_match(capsys):
    from knife.platform.cli import main
    from knife.platform.config_doc import config_rows, markdown

    keys = [r.key for r in config_rows()]
    for name in field_names(TrainingConfig):
        assert f"training.{name}" in keys
    assert "plasticity.monitor.tau" in keys and "plasticity.options.knife.max_fraction" in keys
    assert "tasks.optimizer_on_switch" in keys
    assert main(["config", "training.td_lambda"]) == 0
    printed = capsys.readouterr().out
    assert "training.td_lambda  = 0.6 (a number in [0, 1])" in printed
    assert "lambda of the TD(lambda) targets" in printed
    assert main(["config", "training.nope"]) == 2
    assert "no such key" in capsys.readouterr().err
    # The committed key reference is the generated one (regenerate: knife config --markdown).
    assert (ROOT / "docs" / "configuration.md").read_text() == markdown()
