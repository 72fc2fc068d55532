"""QMIX and VDN on RLlib's new API stack: agent, mixer, RLModule, Learner, Algorithm."""

from knife.policies.algorithm import QMix, QMixConfig, result_metrics

__all__ = ["QMix", "QMixConfig", "result_metrics"]
