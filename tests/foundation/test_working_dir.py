"""A Ray job's working_dir (the repo root) imports the same packages as the installed project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A second driver joins the shared test cluster with the repo as its job's working_dir, as
# `ray job submit --working-dir .` does, and reports where a task imported the packages from.
DRIVER = """
import json, sys, ray
ray.init(runtime_env={"working_dir": sys.argv[1], "excludes": [".venv", ".refinery", "build"]})

@ray.remote
def where():
    import jobs.cli, refinery.config
    return {"refinery": refinery.config.__file__, "jobs": jobs.cli.__file__}

print(json.dumps(ray.get(where.remote())))
"""


@pytest.mark.usefixtures("ray_session")
def test_packages_import_from_a_shipped_working_dir(tmp_path: Path) -> None:
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(REPO)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    files = json.loads(result.stdout.strip().splitlines()[-1])
    for name, path in files.items():
        # The task ran from Ray's unpacked copy of the repo, not from this checkout.
        assert not path.startswith(str(REPO)), (name, path)
        assert path.endswith(f"{name}/{Path(path).name}")
