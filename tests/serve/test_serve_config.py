"""configs/serve.yaml is Ray Serve's own format, and its args are a valid ServeAppConfig."""

from __future__ import annotations

import pytest

from refinery.config import CONFIG_DIR, ConfigError, read_yaml, validate
from serve.config import ServeAppConfig
from serve.llm_deployment import placement_bundles


def test_shipped_serve_config_validates() -> None:
    data = read_yaml(str(CONFIG_DIR / "serve.yaml"))
    [app] = data["applications"]
    assert app["import_path"] == "serve.app:build"
    cfg = validate(ServeAppConfig, app["args"], "serve.yaml")
    assert cfg.llm is not None and cfg.llm.max_model_len == 512 and cfg.index.snapshot


def test_misspelt_keys_name_their_path() -> None:
    with pytest.raises(ConfigError, match=r"llm\.max_tokens"):
        validate(ServeAppConfig, {"llm": {"max_tokens": 5}}, "args")


def test_placement_bundles_follow_the_device() -> None:
    cpu = ServeAppConfig.model_validate({"llm": {}}).llm
    assert placement_bundles(cpu) == [{"CPU": 1}]
    gpu = ServeAppConfig.model_validate(
        {"llm": {"num_gpus": 1, "tensor_parallel_size": 2, "num_cpus": 2}}
    ).llm
    assert placement_bundles(gpu) == [{"CPU": 2, "GPU": 1}, {"GPU": 1}]


@pytest.mark.parametrize(
    ("llms", "message"),
    [
        ({"llm_arms": [{"model": "tiny", "model_id": "next"}]}, "llm_arms needs llm"),
        (
            {
                "llm": {"model": "tiny", "model_id": "m"},
                "llm_arms": [{"model": "b", "model_id": "m"}],
            },
            "distinct model_ids",
        ),
    ],
)
def test_llm_arms_need_the_stable_llm_and_their_own_names(llms: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(ServeAppConfig, llms, "serve args")


def test_the_stable_arm_names_its_llm_and_every_llm_is_listed() -> None:
    cfg = ServeAppConfig.model_validate(
        {"llm": {"model": "tiny", "model_id": "m"}, "llm_arms": [{"model": "b", "model_id": "n"}]}
    )
    assert [llm.model_id for llm in cfg.llms] == ["m", "n"]
    assert cfg.ingress_user_config()["llm"] == "m"
    assert ServeAppConfig().llms == [] and ServeAppConfig().ingress_user_config()["llm"] is None
