"""KubeRay manifests (`refinery k8s render`, deploy/k8s/): valid YAML, the Serve config as it is,
entrypoints the CLI knows, and the checked-in files equal to a fresh render."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from jobs.batch import BATCH_JOBS
from jobs.cli import build_parser, main
from jobs.k8s import DEFAULT_OUT, DEFAULT_SERVE_CONFIG, JOB_IO, render
from refinery.config import ConfigError


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {name: yaml.safe_load(text) for name, text in render().items()}


def test_every_manifest_is_one_kuberay_v1_document() -> None:
    for name, text in render().items():
        documents = list(yaml.safe_load_all(text))
        assert len(documents) == 1, name
        assert documents[0]["apiVersion"] == "ray.io/v1", name


def test_rayservice_serves_configs_serve_yaml(manifests: dict[str, dict]) -> None:
    service = manifests["rayservice.yaml"]
    assert service["kind"] == "RayService"
    served = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert served == yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    groups = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert "gpu" in {group["groupName"] for group in groups}


def test_a_rayjob_per_batch_job_runs_an_existing_cli_command(manifests: dict[str, dict]) -> None:
    jobs = {m["metadata"]["name"]: m for m in manifests.values() if m["kind"] == "RayJob"}
    assert {"docs", "logs"} <= set(JOB_IO) <= set(BATCH_JOBS)
    assert set(jobs) == {f"refinery-{job}" for job in JOB_IO}
    for job in JOB_IO:
        argv = shlex.split(jobs[f"refinery-{job}"]["spec"]["entrypoint"])
        assert argv[:3] == ["python", "-m", "jobs.cli"]
        args = build_parser().parse_args(argv[3:])  # exits on a command the CLI does not know
        assert (args.command, args.job, args.profile) == ("run", job, "cluster")
        assert args.input and args.output  # `refinery run` refuses a job without them


def test_image_is_every_containers_image() -> None:
    service = yaml.safe_load(render(image="registry.example/refinery:abc")["rayservice.yaml"])
    cluster = service["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    images = {c["image"] for pod in pods for c in pod["template"]["spec"]["containers"]}
    assert images == {"registry.example/refinery:abc"}


def test_checked_in_manifests_equal_a_fresh_render() -> None:
    fresh = render()
    checked_in = {path.name: path.read_text() for path in DEFAULT_OUT.glob("*.yaml")}
    assert checked_in == fresh, "deploy/k8s/ is stale: run `refinery k8s render`"


def test_render_command_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["k8s", "render", "--out", str(tmp_path), "--image", "img:1"]) == 0
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(render())
    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in render()]
    assert "image: img:1" in (tmp_path / "rayjob-logs.yaml").read_text()


def test_render_to_stdout_is_one_stream(capsys: pytest.CaptureFixture) -> None:
    assert main(["k8s", "render", "--out", "-"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in documents] == ["RayService"] + ["RayJob"] * len(JOB_IO)


def test_missing_serve_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        render(serve_config=tmp_path / "nope.yaml")
