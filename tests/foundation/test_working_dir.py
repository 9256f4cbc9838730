"""A Ray job shipped with the repo root as its working_dir imports the project's packages by the
same names as the installed project (a flat layout: no src/, no path set-up in the job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A second driver joins the shared test cluster with the repo as its job's working_dir, as
# `ray job submit --working-dir .` does, and imports every package inside a task.
DRIVER = """
import json, sys, ray
ray.init(runtime_env={"working_dir": sys.argv[1], "excludes": [".venv", ".refinery", "build"]})

@ray.remote
def where():
    import os
    import jobs.cli, pipelines.logs, refinery.config, serve.protocol, vectorindex
    return {"cwd": os.getcwd(), "ntotal": vectorindex.IndexFlatL2(3).ntotal}

print(json.dumps(ray.get(where.remote())))
"""


@pytest.mark.usefixtures("ray_session")
def test_a_job_with_the_repo_as_working_dir_imports_every_package(tmp_path: Path) -> None:
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, str(REPO)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    shipped = json.loads(result.stdout.strip().splitlines()[-1])
    # The task ran in Ray's unpacked copy of the repo, which holds the packages.
    cwd = Path(shipped["cwd"])
    assert cwd != REPO and (cwd / "refinery" / "config.py").is_file()
    assert not (cwd / ".venv").exists()
    assert shipped["ntotal"] == 0
