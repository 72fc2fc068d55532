import pytest

OWN_RAY = "own_ray"  # the xdist group of the tests marked own_ray (pyproject.toml)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(config, items):
    """The tests that start Ray clusters of their own in subprocesses (`knife sweep`, `ray
    start`; marked `pytest.mark.own_ray`) join one xdist group and come first: under `-n 2
    --dist loadgroup` they run one after another on one worker, and first, so that this long
    group starts at once while the other worker takes the rest (pyproject.toml)."""
    for item in items:
        if item.get_closest_marker(OWN_RAY):
            item.add_marker(pytest.mark.xdist_group(OWN_RAY))
    items.sort(key=lambda item: item.get_closest_marker(OWN_RAY) is None)  # stable


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the whole test session (real Ray, 2 CPUs)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
