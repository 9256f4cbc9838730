"""cluster.yaml is a valid Ray cluster launcher config (Ray's own schema, offline)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def test_cluster_yaml_passes_rays_schema() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    # prepare_config fills in the provider's defaults, as `ray up` does before validating.
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]


def test_schema_check_catches_a_misspelt_key() -> None:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    config["available_node_types"]["cpu_worker"]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(prepare_config(config))


def test_head_dashboard_is_loopback_only_and_gpu_workers_stay() -> None:
    """The dashboard's Jobs API runs what it is sent: only `ray dashboard`'s tunnel reaches it."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["max_workers"] > 0
