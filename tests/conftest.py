import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the whole test session (real Ray, 2 CPUs)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
