"""Shared fixtures. Unit tests never start Ray; integration tests share one local Ray per
session (`ray_session`); GPU tests are marked `gpu` and skip without CUDA."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from refinery.config import RuntimeConfig, StorageConfig, TrackingConfig
from refinery.tinyllm import build_tiny_llama

# Logical CPUs for the shared test Ray: more than the 2 cores, because Serve ingress replicas
# and vLLM's placement bundle each reserve a CPU while mostly waiting.
TEST_RAY_CPUS = int(os.environ.get("REFINERY_TEST_RAY_CPUS", "8"))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs CUDA (none on this machine)")
    cuda = _has_cuda()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    # address="local": a Ray of its own, never a cluster already running on this machine
    # (which ray.init would otherwise join, and refuse num_cpus for).
    ray.init(
        address="local",
        num_cpus=TEST_RAY_CPUS,
        include_dashboard=False,
        namespace="refinery-tests",
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def mlflow_storage(tmp_path_factory: pytest.TempPathFactory) -> StorageConfig:
    """One sqlite MLflow store per session: creating its schema takes seconds."""
    return StorageConfig(root=str(tmp_path_factory.mktemp("refinery-state")))


@pytest.fixture
def runtime(mlflow_storage: StorageConfig, monkeypatch: pytest.MonkeyPatch) -> RuntimeConfig:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return RuntimeConfig(storage=mlflow_storage, tracking=TrackingConfig(experiment="tests"))
