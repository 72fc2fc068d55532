"""QMIX and VDN on RLlib's new API stack: agent, mixer, RLModule, Learner, Algorithm."""

import logging
import os

# RLlib imports JAX and Flax into every process whenever they are installed (our [smax] extra
# installs JAX for SMAX), for old-API-stack code this package never uses: ~110 MB and ~0.3 s
# per process (the driver and every EnvRunner, which inherit this variable). SMAX imports JAX
# itself and is not affected. RLlib logs a warning when it skips the import; it is expected.
os.environ.setdefault("RLLIB_TEST_NO_JAX_IMPORT", "1")
logging.getLogger("ray.rllib.utils.framework").addFilter(
    lambda record: "Not importing JAX" not in record.getMessage()
)

from knife.policies.algorithm import QMix, QMixConfig, result_metrics  # noqa: E402

__all__ = ["QMix", "QMixConfig", "result_metrics"]
