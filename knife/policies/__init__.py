"""QMIX and VDN on RLlib's new API stack: agent, mixer, RLModule, Learner, Algorithm.

The package's names are imported on first use (PEP 562), so `knife.policies.schema` and
`knife.policies.registry` load without Ray or torch (config validation must not pay for
them).
"""

import logging
import os
from typing import Any

# RLlib imports JAX and Flax into every process whenever they are installed (our [smax] extra
# installs JAX for SMAX), for old-API-stack code this package never uses: ~110 MB and ~0.3 s
# per process (the driver and every EnvRunner, which inherit this variable). SMAX imports JAX
# itself and is not affected. RLlib logs a warning when it skips the import; it is expected.
os.environ.setdefault("RLLIB_TEST_NO_JAX_IMPORT", "1")
logging.getLogger("ray.rllib.utils.framework").addFilter(
    lambda record: "Not importing JAX" not in record.getMessage()
)

__all__ = ["QMix", "QMixConfig", "result_metrics", "test_records"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from knife.policies import algorithm

        return getattr(algorithm, name)
    raise AttributeError(f"module 'knife.policies' has no attribute {name!r}")
