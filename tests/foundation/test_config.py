"""Config loading: typed models, profiles, overrides, and errors that name the file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from refinery.config import (
    CONFIG_DIR,
    PROFILES,
    ConfigError,
    JobConfig,
    RuntimeConfig,
    load_job_config,
    load_profile,
    load_runtime,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profiles_validate(profile: str) -> None:
    assert isinstance(load_runtime(profile), RuntimeConfig)


def test_profiles_live_apart_from_job_configs() -> None:
    """configs/cluster.yaml would read as the repo's launcher config (cluster.yaml)."""
    for profile in PROFILES:
        assert (CONFIG_DIR / "profiles" / f"{profile}.yaml").is_file()
        assert not (CONFIG_DIR / f"{profile}.yaml").exists()


def test_local_profile_is_the_embedded_default() -> None:
    local = load_runtime("local")
    assert local.ray.address is None
    assert local.embedding.device == "cpu"
    assert local.llm.model == "tiny"
    assert local.qdrant.url is None


def test_ray_address_selects_the_cluster_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert load_runtime().ray.address == "auto"
    monkeypatch.delenv("RAY_ADDRESS")
    assert load_runtime().ray.address is None


def test_misspelt_key_names_file_and_key_path(tmp_path: Path) -> None:
    cfg = write(tmp_path / "job.yaml", "input: x\nruntime:\n  embedding:\n    batchsize: 8\n")
    with pytest.raises(ConfigError) as error:
        load_job_config(JobConfig, cfg)
    message = str(error.value)
    assert str(cfg) in message
    assert "runtime.embedding.batchsize: unknown key" in message
    assert "batch_size" in message  # the known keys are listed


def test_wrong_type_names_key_path_and_value(tmp_path: Path) -> None:
    cfg = write(tmp_path / "job.yaml", "runtime:\n  embedding:\n    batch_size: lots\n")
    with pytest.raises(ConfigError, match=r"runtime\.embedding\.batch_size: .*'lots'"):
        load_job_config(JobConfig, cfg)


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_job_config(JobConfig, tmp_path / "nope.yaml")


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_job_config(JobConfig, write(tmp_path / "bad.yaml", "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping, got list"):
        load_job_config(JobConfig, write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_file_overrides_profile_and_set_overrides_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "job.yaml", "input: a\nruntime:\n  embedding:\n    batch_size: 8\n")
    loaded = load_job_config(
        JobConfig, cfg, profile="local", overrides=["runtime.embedding.batch_size=64", "output=out"]
    )
    assert loaded.runtime.embedding.batch_size == 64
    assert loaded.output == "out"
    assert loaded.runtime.embedding.model == "all-MiniLM-L6-v2"  # kept from the profile


def test_bad_override_is_checked_against_the_model(tmp_path: Path) -> None:
    cfg = write(tmp_path / "job.yaml", "input: a\n")
    with pytest.raises(ConfigError, match=r"--set runtime\.llm\.dtipe=x.*runtime\.llm\.dtipe"):
        load_job_config(JobConfig, cfg, overrides=["runtime.llm.dtipe=x"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_job_config(JobConfig, cfg, overrides=["novalue"])


def test_profile_by_path_and_unknown_profile(tmp_path: Path) -> None:
    custom = write(tmp_path / "mine.yaml", "ray:\n  num_cpus: 3\n")
    assert load_runtime(str(custom)).ray.num_cpus == 3
    with pytest.raises(ConfigError, match="staging.yaml: config file not found"):
        load_profile("staging")
    bad = write(tmp_path / "bad.yaml", "ray:\n  num_cpu: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: ray\.num_cpu: unknown key"):
        load_profile(str(bad))


def test_every_shipped_yaml_is_valid() -> None:
    """Job configs under configs/ validate against their job's model (catches drift)."""
    from jobs.batch import BATCH_JOBS, load_batch_config

    assert set(BATCH_JOBS) == {"docs", "logs", "reindex"}
    for job in BATCH_JOBS.values():
        assert Path(job.default_config).parent == CONFIG_DIR
        for profile in PROFILES:
            load_batch_config(job, None, profile=profile)
