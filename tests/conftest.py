import pytest


def pytest_collection_modifyitems(config, items):
    """The tests that start Ray clusters of their own in subprocesses (`knife sweep`, `ray
    start`; marked xdist_group("own_ray")) first: under `-n 2 --dist loadgroup` they run one
    after another on one worker, and first, so that this long group starts at once while the
    other worker takes the rest (pyproject.toml)."""

    def own_ray(item) -> bool:
        mark = item.get_closest_marker("xdist_group")
        return mark is not None and mark.args[:1] == ("own_ray",)

    items.sort(key=lambda item: not own_ray(item))  # stable: each side keeps its order


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the whole test session (real Ray, 2 CPUs)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
