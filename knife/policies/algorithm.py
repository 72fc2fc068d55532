"""QMix Algorithm and QMixConfig on RLlib's new API stack (written the way RLlib's DQN is).

One `training_step`:
  1. each EnvRunner plays complete episodes (epsilon-greedy) -> episode replay buffer
  2. once the buffer holds `learning_starts` episodes: `updates_per_episode` learner updates
     per collected episode, each on a batch of `batch_size` whole episodes
  3. sync the Learner's agent weights to the EnvRunners
  4. every `test_interval` env steps: greedy test episodes on a separate test env
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    LEARNER_RESULTS,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    WEIGHTS_SEQ_NO,
)

from knife.envs.tasks import SWITCH_DEFAULTS, TaskSequence
from knife.plasticity.config import PlasticityConfig, validate_plasticity
from knife.policies import metric_keys as mk
from knife.policies.env_runner import TeamEnvRunner
from knife.policies.learner import QMixTorchLearner
from knife.policies.registry import algorithm_spec
from knife.policies.replay_buffer import EpisodeReplayBuffer
from knife.policies.rl_module import QMixRLModule, linear_epsilon
from knife.policies.schema import ALGORITHM_KEYS, MODEL_KEYS, check_values, defaults
from knife.policies.task_progress import TaskProgress
from knife.policies.torch_threads import set_torch_threads

KNIFE = "knife"  # result-dict namespace of this algorithm's own metrics

SAMPLE_TAG = "knife_sample"


class QMixConfig(AlgorithmConfig):
    """Config of the value-factorization algorithms (knife.policies.registry: qmix, vdn, ...).

    QMixConfig().environment("matrix:two_step").training(algorithm="qmix", lr=1e-3).build_algo()

    Every hyperparameter, its default and its allowed values are declared once in
    knife.policies.schema (the YAML `training:` and `evaluation:` sections); `validate()`
    checks them there, with the messages a YAML file gets.
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or QMix)
        self.grad_clip_by = "global_norm"
        self.algorithm = "qmix"
        # The schema's defaults, RLlib's own lr/gamma/grad_clip/num_env_runners included.
        for key, value in defaults().items():
            setattr(self, key, value)
        self.env_runner_cls = TeamEnvRunner
        # TeamEnvRunner has no connector pipelines: nothing to merge or broadcast.
        self.merge_env_runner_states = False
        self.broadcast_env_runner_states = False
        self.min_sample_timesteps_per_iteration = 1000
        self.min_time_s_per_iteration = None
        # Room for an in-flight sample request plus a weight sync per EnvRunner.
        self.max_requests_in_flight_per_env_runner = 4
        self.plasticity_config: dict[str, Any] = PlasticityConfig().to_dict()
        self.task_sequence: Any = None

    def tasks(self, sequence: Any) -> QMixConfig:
        """Train through a task sequence: the `tasks:` section of a trial config (a list of
        {env, env_config, steps}, a mapping with options, or a preset; see
        knife.envs.tasks). The sequence's tasks replace `environment(env=...)`."""
        self.task_sequence = sequence
        if sequence is not None:
            first = TaskSequence.from_config(sequence).tasks[0]
            self.environment(env=first.env, env_config=dict(first.env_config))
        return self

    def plasticity(
        self,
        method: str | None = None,
        *,
        monitor: dict[str, Any] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        probe: dict[str, Any] | None = None,
    ) -> QMixConfig:
        """Plasticity monitor and intervention (knife.plasticity.config), e.g.
        .plasticity("knife", monitor={"tau": 0.25}, options={"knife": {"max_fraction": 0.25}}).

        method: the intervention (knife.plasticity.INTERVENTIONS); monitor: tau, beta,
        signal ("grad" | "update"), metrics_interval (learner updates between metric
        reports); options: per method name, that method's own options (on_task_switch,
        every_n_updates, scope, max_fraction, ...); probe: the trainability probe
        (at_switch, every, steps, lr, batch; knife.plasticity.probe). Given keys update the
        current ones.
        """
        current = self.plasticity_config
        merged_options = {m: dict(o) for m, o in current.get("options", {}).items()}
        for name, block in (options or {}).items():
            merged_options[name] = {**merged_options.get(name, {}), **(block or {})}
        self.plasticity_config = {
            "method": current.get("method", "none") if method is None else method,
            "monitor": {**current.get("monitor", {}), **(monitor or {})},
            "probe": {**current.get("probe", {}), **(probe or {})},
            "options": merged_options,
        }
        return self

    def training(self, **kwargs) -> QMixConfig:
        """RLlib's training() plus the schema's keys (knife.policies.schema), `algorithm`
        and the evaluation section's test_episodes, test_interval."""
        ours = {k: kwargs.pop(k) for k in list(kwargs) if k in ALGORITHM_KEYS}
        super().training(**kwargs)
        for key, value in ours.items():
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def validate(self) -> None:
        super().validate()
        networks = algorithm_spec(self.algorithm).networks
        # The schema's ranges and cross-field rules, as a YAML config gets them.
        check_values({key: getattr(self, key) for key in ALGORITHM_KEYS})
        validate_plasticity(self.plasticity_config, self.algorithm, networks)
        if self.task_sequence is not None:
            TaskSequence.from_config(self.task_sequence)  # field-named errors

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=QMixRLModule, model_config=self.model_config)

    @property
    def _model_config_auto_includes(self) -> dict[str, Any]:
        return super()._model_config_auto_includes | {k: getattr(self, k) for k in MODEL_KEYS}

    def get_default_learner_class(self) -> type:
        return QMixTorchLearner


class QMix(Algorithm):
    """QMIX / VDN with whole-episode replay."""

    @classmethod
    def get_default_config(cls) -> QMixConfig:
        return QMixConfig()

    def setup(self, config: AlgorithmConfig) -> None:
        set_torch_threads(config.torch_threads)  # before the local Learner is built
        super().setup(config)
        # The driver's EnvRunner has already parsed the sequence and built the (padded) env:
        # read the sizes off it instead of building every task's env again here.
        runner = self.env_runner_group.local_env_runner
        self.sequence = runner.sequence
        team = self.team = runner.env.team
        self.progress = TaskProgress()
        self.replay_buffer = EpisodeReplayBuffer(
            self.config.buffer_size,
            team.episode_limit,
            team.n_agents,
            team.obs_dim,
            team.state_dim,
            team.n_actions,
        )
        self._rng = np.random.default_rng(self.config.seed)
        self.counters = {
            "env_steps": 0,
            "episodes": 0,
            "learner_updates": 0,
            "last_test_at": -1,
            "update_credit": 0.0,
        }
        self._last_test: dict[str, float] = {}
        self._test_records: list[tuple[int, dict[str, float]]] = []
        self._plasticity_latest: dict[str, float] = {}
        self._weights_synced = False
        self._samples_in_flight = 0

    # --- one iteration ---------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """RLlib's iteration (one or more `training_step`s) plus the greedy tests it ran, as
        records under `test_records` (knife.policies.metric_keys; read with test_records())."""
        result = super().step()
        result[mk.TEST_RECORDS], self._test_records = self._test_records, []
        # The Learner's dict holds each plasticity metric as last measured (switches
        # included), so reading it once per iteration gives what reading it after every
        # update would.
        self._plasticity_latest.update(self._learner_plasticity())
        # States (counters, the latest test, plasticity, task results) as they stand at the
        # iteration's end, put in once: logged through the MetricsLogger at every
        # training_step, they cost ~130 log_value calls per step.
        result.setdefault(KNIFE, {}).update(self._states())
        return result

    def _states(self) -> dict[str, float]:
        states = {key: float(self.counters[key]) for key in mk.COUNTER_KEYS}
        states.update(self._last_test)
        states.update(self._plasticity_latest)
        if self.sequence is not None:
            states.update(self.progress.metrics())
        return states

    def training_step(self) -> None:
        cfg = self.config
        if not self._weights_synced:
            self._sync_weights()
        if self.counters["last_test_at"] < 0:
            self._random_baseline()  # task 0's random-policy return
            self._test()  # the untrained policy's test return, at env step 0
        if self._between_tasks():
            self._start_next_task()  # restored from a shared prefix's end (a paired branch)

        step_start = t0 = time.perf_counter()
        samples = self._sample_training_episodes()
        sample_s = time.perf_counter() - t0  # overlapped: only the wait for the runners
        episodes = [ep for s in samples for ep in s["episodes"]]
        steps = sum(s["env_steps"] for s in samples)
        for ep in episodes:
            self.replay_buffer.add(ep)
        self.counters["env_steps"] += steps
        self.counters["episodes"] += len(episodes)

        learner_results = []
        t1 = time.perf_counter()
        if len(self.replay_buffer) >= cfg.learning_starts:
            self.counters["update_credit"] += cfg.updates_per_episode * len(episodes)
            while self.counters["update_credit"] >= 1.0:
                self.counters["update_credit"] -= 1.0
                # The Learner's metrics are reduced once per iteration, over all of its
                # updates, not after each one (RLlib's reduce costs ~a third of an update).
                last = self.counters["update_credit"] < 1.0
                learner_results.extend(r for r in self._update_once(reduce=last) if r)
        learn_s = time.perf_counter() - t1
        if learner_results:
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
            self._sync_weights()

        if self._task_finished():
            self._end_task()
        elif self.counters["env_steps"] - self.counters["last_test_at"] >= cfg.test_interval:
            self._test()

        won = [float(ep.info["battle_won"]) for ep in episodes if "battle_won" in ep.info]
        log = {
            mk.EPSILON: linear_epsilon(
                self._epsilon_steps(),
                cfg.epsilon_start,
                cfg.epsilon_finish,
                cfg.epsilon_anneal_steps,
            ),
            "sample_seconds": sample_s,
            "learn_seconds": learn_s,
        }
        if episodes:  # none when the only remote EnvRunner died (RLlib restarts it)
            log[mk.TRAIN_RETURN] = float(np.mean([ep.episode_return for ep in episodes]))
            log[mk.TRAIN_EPISODE_LEN] = float(np.mean([ep.length for ep in episodes]))
        if won:
            log[mk.TRAIN_WIN_RATE] = float(np.mean(won))
        for key, value in log.items():
            self.metrics.log_value((KNIFE, key), value, reduce="mean")
        self.metrics.log_value((KNIFE, "iteration_env_steps"), steps, reduce="sum")
        self.metrics.log_value(
            (KNIFE, "iteration_seconds"), time.perf_counter() - step_start, reduce="sum"
        )
        self.metrics.log_value(
            (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), steps, reduce="lifetime_sum"
        )

    # --- helpers ---------------------------------------------------------------------

    def _sample_training_episodes(self) -> list[dict[str, Any]]:
        """Each training EnvRunner plays `episodes_per_runner` epsilon-greedy episodes.

        With remote EnvRunners and `sample_while_learning`, this returns the episodes asked
        for in the previous step and at once asks for the next ones, so the runners play
        while this process learns.
        """
        group = self.env_runner_group
        if group.num_remote_env_runners() == 0:
            return [group.local_env_runner.sample(**self._sample_kwargs())]
        if not self.config.sample_while_learning:
            kwargs = self._sample_kwargs()
            return group.foreach_env_runner(lambda r: r.sample(**kwargs), local_env_runner=False)
        if not self._samples_in_flight:
            self._request_samples(0)
        # Waits for every in-flight request; a runner that died returns nothing here and
        # is restarted by RLlib's fault tolerance.
        ready = group.fetch_ready_async_reqs(tags=SAMPLE_TAG, timeout_seconds=None)
        samples = [sample for _, sample in ready]
        self._request_samples(sum(s["env_steps"] for s in samples))
        return samples

    def _sample_kwargs(self, pending_steps: int = 0) -> dict[str, Any]:
        return {
            "num_episodes": self.config.episodes_per_runner,
            "explore": True,
            "global_env_steps": self._epsilon_steps() + pending_steps,
        }

    def _request_samples(self, pending_steps: int) -> None:
        kwargs = self._sample_kwargs(pending_steps)
        self._samples_in_flight = self.env_runner_group.foreach_env_runner_async(
            lambda r: r.sample(**kwargs), tag=SAMPLE_TAG
        )

    def _drop_samples_in_flight(self) -> None:
        """Wait for and discard in-flight episodes (at a task switch: they belong to the
        finished task, whose budget is spent)."""
        if self._samples_in_flight:
            self.env_runner_group.fetch_ready_async_reqs(tags=SAMPLE_TAG, timeout_seconds=None)
            self._samples_in_flight = 0

    def _update_once(self, reduce: bool = True) -> list[dict]:
        """One gradient update on a sampled batch; `reduce=False` leaves the Learner's
        metrics to the next update that reduces (its results are then empty)."""
        batch = self.replay_buffer.sample(self.config.batch_size, self._rng)
        ma_batch = MultiAgentBatch(
            {DEFAULT_MODULE_ID: SampleBatch(batch)}, env_steps=self.config.batch_size
        )
        results = self.learner_group.update(
            batch=ma_batch,
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.counters["env_steps"]},
            _no_metrics_reduce=not reduce,
        )
        self.counters["learner_updates"] += 1
        return results

    def _learner_plasticity(self) -> dict[str, float]:
        """The plasticity metrics the Learner measured last (states reported every few
        updates, not per-update samples; the first Learner's, as all hold one network)."""
        results = self.learner_group.foreach_learner(lambda learner: learner.plasticity_latest)
        latest = next(iter(results)).get().get(DEFAULT_MODULE_ID, {})
        return {key: float(v) for key, v in latest.items() if not np.isnan(float(v))}

    def on_task_switch(self) -> dict[str, float]:
        """Tell the Learner(s) a new task starts (plasticity trigger and the sequence's
        target and optimizer handling), then resync weights."""
        options = SWITCH_DEFAULTS if self.sequence is None else self.sequence.options()
        protocol = {
            "target": options["target_on_switch"],
            "optimizer": options["optimizer_on_switch"],
        }
        # The buffer's latest episodes, for a Learner with no batch of its own yet (right after
        # a restore: a paired branch's first switch); one that has updated ignores them.
        if len(self.replay_buffer):
            recent = self.replay_buffer.latest(self.config.batch_size)
            protocol["replay_batch"] = MultiAgentBatch(
                {DEFAULT_MODULE_ID: SampleBatch(recent)}, env_steps=self.config.batch_size
            )
        results = self.learner_group.foreach_learner(
            lambda learner: learner.on_task_switch(**protocol)
        )
        first = next(iter(results)).get()
        self._sync_weights()
        return first.get(DEFAULT_MODULE_ID, {})

    def _sync_weights(self) -> None:
        group = self.env_runner_group
        if group.num_remote_workers() == 0 and self.learner_group.is_local:
            # Sampling in the driver: hand the Learner's weights to the local EnvRunner
            # directly. RLlib's sync_weights also ray.put()s them for remote EnvRunners,
            # even when there are none: 1/6 of a two-step game's iteration, measured.
            state = self.learner_group.get_state(
                components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=True
            )[COMPONENT_LEARNER]
            keep = (COMPONENT_RL_MODULE, WEIGHTS_SEQ_NO)  # as RLlib hands them on
            group.local_env_runner.set_state({k: v for k, v in state.items() if k in keep})
        else:
            group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
        self._weights_synced = True

    def _random_baseline(self) -> None:
        """The current task's return under a uniformly random policy (its own env and seed:
        no training or test stream moves), the 0 of knife report's normalized scores."""
        n = self.config.test_random_episodes
        if self.sequence is None or n == 0:
            return
        runner = self.env_runner_group.local_env_runner
        played = runner.sample(num_episodes=n, random_policy=True, task_index=self.progress.index)
        value = float(np.mean([ep.episode_return for ep in played["episodes"]]))
        self.progress.current.random_return = value

    def _test(self) -> None:
        """Greedy test episodes on the current task (and, if asked, on earlier tasks);
        unsmoothed results of this test only."""
        steps, index = self.counters["env_steps"], self.progress.index
        ret, win = self._test_task(index)
        self._last_test = {mk.TEST_RETURN: ret, mk.TEST_AT: float(steps)}
        if win is not None:
            self._last_test[mk.TEST_WIN_RATE] = win
        record = {k: v for k, v in self._last_test.items() if k != mk.TEST_AT}
        if self.sequence is not None:
            record[mk.task_key(index, mk.TASK_TEST_RETURN)] = ret
            if win is not None:
                record[mk.task_key(index, mk.TASK_TEST_WIN_RATE)] = win
            if self.sequence.eval_previous:
                for task in range(index):
                    record[mk.task_key(task, mk.RETEST_RETURN)] = self._test_task(task)[0]
        self._test_records.append((steps, record))
        self.counters["last_test_at"] = steps

    def _test_task(self, task: int) -> tuple[float, float | None]:
        runner = self.env_runner_group.local_env_runner
        eps = runner.sample(num_episodes=self.config.test_episodes, explore=False, task_index=task)
        eps = eps["episodes"]
        ret = float(np.mean([e.episode_return for e in eps]))
        won = [float(e.info["battle_won"]) for e in eps if "battle_won" in e.info]
        win = float(np.mean(won)) if won else None
        self.progress.record_test(task, self.counters["env_steps"], ret, win)
        return ret, win

    # --- task transfer ---------------------------------------------------------------

    def _epsilon_steps(self) -> int:
        """Env steps that drive epsilon: since the task began if re-annealing, else all."""
        steps = self.counters["env_steps"]
        if self.sequence is not None and self.sequence.reanneal_epsilon:
            steps -= self.progress.current.start_env_steps
        return steps

    def _task_finished(self) -> bool:
        if self.sequence is None or self.progress.current.end_env_steps is not None:
            return False
        return self.counters["env_steps"] >= self.sequence.boundaries()[self.progress.index]

    def _between_tasks(self) -> bool:
        """The current task has ended and another follows: only after a restore from a
        checkpoint taken at a task's end (a shared prefix, docs/design.md 9)."""
        if self.sequence is None or self.progress.current.end_env_steps is None:
            return False
        return self.progress.index + 1 < len(self.sequence)

    def _end_task(self) -> None:
        """Final test of the finished task; then switch to the next one, if any."""
        self._test()
        self.progress.end_task(self.counters["env_steps"])
        if self._between_tasks():
            self._start_next_task()

    def _start_next_task(self) -> None:
        """The switch to the next task, the same for every method (docs/design.md 9)."""
        nxt = self.progress.index + 1
        self.progress.start_task(self.counters["env_steps"])
        self._drop_samples_in_flight()
        self.env_runner_group.foreach_env_runner(
            lambda runner: runner.set_task(nxt), local_env_runner=True
        )
        # Plasticity trigger + weight sync; its metrics are reported from now on.
        self._plasticity_latest.update(self.on_task_switch())
        if self.sequence.buffer_on_switch == "flush":
            self.replay_buffer.clear()
            self.counters["update_credit"] = 0.0
        self._random_baseline()
        self._test()  # where the new task starts from

    # --- checkpoints: the buffer and counters travel with the Algorithm's state --------

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(KNIFE, components, not_components):
            state[KNIFE] = {
                "counters": dict(self.counters),
                "last_test": dict(self._last_test),
                "plasticity_latest": dict(self._plasticity_latest),
                "replay_buffer": self.replay_buffer.state_dict(),
                "rng": self._rng.bit_generator.state,
                "progress": self.progress.state_dict(),
            }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if KNIFE in state:
            own = state[KNIFE]
            self.counters.update(own["counters"])
            self._last_test = dict(own["last_test"])
            self._plasticity_latest = dict(own.get("plasticity_latest", {}))
            self.replay_buffer.load_state_dict(own["replay_buffer"])
            self._rng.bit_generator.state = own["rng"]
            self.progress.load_state_dict(own["progress"])
            task = self.progress.index
            if task > 0:
                self.env_runner_group.foreach_env_runner(
                    lambda runner: runner.set_task(task), local_env_runner=True
                )
            self._weights_synced = False


def test_records(result: dict[str, Any]) -> list[tuple[int, dict[str, float]]]:
    """The greedy tests of one `Algorithm.train()` result: [(env step, {metric: value})]."""
    return [(int(step), dict(values)) for step, values in result.get(mk.TEST_RECORDS, ())]


def result_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The curated, flat metrics of one `Algorithm.train()` result (for MLflow, Tune)."""
    out: dict[str, float] = {}
    for key, value in result.get(KNIFE, {}).items():
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[key] = float(value)
    learner = result.get(LEARNER_RESULTS, {}).get(DEFAULT_MODULE_ID, {})
    for key in mk.LEARNER_KEYS:
        if key in learner:
            out[mk.learner_key(key)] = float(learner[key])
    # Throughput of this iteration: all its env steps over all its training-step time.
    steps, seconds = out.pop("iteration_env_steps", None), out.pop("iteration_seconds", None)
    if steps is not None and seconds:
        out[mk.ENV_STEPS_PER_S] = steps / seconds
    return out
