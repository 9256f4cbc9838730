"""Log analytics fixtures: generated logs (seeded, with malformed lines) shared per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.logs.generate import write_logs


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30,000 lines over 3 files, about 0.5% of them malformed."""
    directory = tmp_path_factory.mktemp("logs")
    write_logs(directory, rows=30_000, files=3, seed=7, malformed_rate=0.005)
    return directory
