"""Typed configuration: YAML files under configs/ loaded into pydantic models.

A job config (docs.yaml, logs.yaml, ...) holds the job's own sections plus an optional
`runtime:` section. The runtime section is laid over a profile (configs/profiles/local.yaml or
configs/profiles/cluster.yaml), so switching from a laptop to a cluster is one flag or RAY_ADDRESS.
Every mistake (missing file, bad YAML, unknown key, wrong type) is one ConfigError that
names the file and the key path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# A folder of their own, apart from the job configs and from the repo's cluster.yaml, which is
# the Ray cluster launcher's config and not a profile.
PROFILE_DIR_NAME = "profiles"
PROFILES = ("local", "cluster")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key path."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(StrictModel):
    address: str | None = Field(
        None,
        description="Cluster to join ('auto', 'ray://host:10001'); None: RAY_ADDRESS or new local",
    )
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a new local Ray")
    namespace: str = "refinery"
    runtime_env: dict[str, Any] = Field(default_factory=dict)


class TrackingConfig(StrictModel):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI; None: MLFLOW_TRACKING_URI or sqlite under storage.root",
    )
    experiment: str = "refinery"
    max_retries: int = Field(
        2, ge=0, description="Retries of one MLflow HTTP request (MLFLOW_HTTP_REQUEST_MAX_RETRIES)"
    )
    request_timeout_s: int = Field(
        15, ge=1, description="Timeout of one MLflow HTTP request (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    )


class StorageConfig(StrictModel):
    root: str = Field(
        ".refinery", description="Local state: MLflow store, built models, Qdrant files"
    )


class EmbeddingConfig(StrictModel):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model directory, or all-MiniLM-L6-v2 (from a package)",
    )
    device: str = "cpu"
    batch_size: int = Field(32, ge=1)
    normalize: bool = True
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="CPU only (GPU runs as loaded): auto is bf16 where the CPU has "
        "AVX-512-BF16 or AMX, else fp32",
    )


class LLMConfig(StrictModel):
    model: str = Field(
        "tiny", description="Hugging Face model directory, or 'tiny' (built locally)"
    )
    dtype: str = "bfloat16"
    max_model_len: int = Field(256, ge=16)
    gpu_memory_utilization: float = Field(
        0.1, gt=0, le=1, description="On CPU: share of host RAM reserved for the KV cache"
    )
    tensor_parallel_size: int = Field(1, ge=1)
    enforce_eager: bool = True


class QdrantConfig(StrictModel):
    enabled: bool = False
    url: str | None = Field(
        None, description="Qdrant server; None: embedded mode under storage.root"
    )
    collection: str = "refinery"


class RuntimeConfig(StrictModel):
    """Where and with what a job runs; a profile file is exactly this model."""

    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    qdrant: QdrantConfig = Field(default_factory=QdrantConfig)


class JobConfig(StrictModel):
    """Base of every batch job's config: input, output and the runtime it runs on."""

    input: str | None = None
    output: str | None = None
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


ModelT = TypeVar("ModelT", bound=BaseModel)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _format_errors(source: str, model: type[BaseModel], error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        key_path = ".".join(str(p) for p in err["loc"]) or "<root>"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            known = _known_keys(model, err["loc"][:-1])
            message = "unknown key" + (f" (known keys: {', '.join(known)})" if known else "")
        elif "input" in err and err["type"] != "missing":
            message += f" (got {err['input']!r})"
        lines.append(f"{source}: {key_path}: {message}")
    return "\n".join(lines)


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the sub-model at `loc`, for 'did you mean' style messages."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        current = _model_of(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def validate(model: type[ModelT], data: dict[str, Any], source: str) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(source, model, e)) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_profile() -> str:
    return "cluster" if os.environ.get("RAY_ADDRESS") else "local"


def load_profile(profile: str | None = None, config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """The raw runtime settings of a profile: a name in configs/profiles/ or a path to a YAML
    file."""
    name = profile or default_profile()
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:
        path = config_dir / PROFILE_DIR_NAME / f"{name}.yaml"
    data = read_yaml(path)
    validate(RuntimeConfig, data, str(path))
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a', 'b', 'c'], value), the value parsed as YAML (so 3 is an int)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        nested: dict[str, Any] = value
        for key in reversed(keys):
            nested = {key: nested}
        data = deep_merge(data, nested)
    return data


def load_job_config(
    model: type[ModelT],
    path: str | os.PathLike[str] | None,
    *,
    profile: str | None = None,
    overrides: list[str] | None = None,
    config_dir: Path = CONFIG_DIR,
) -> ModelT:
    """Load a job config: profile runtime, then the file, then `--set` style overrides."""
    source = str(path) if path is not None else f"<{model.__name__} defaults>"
    data = read_yaml(path) if path is not None else {}
    if overrides:
        source += " + --set " + " ".join(overrides)
        data = apply_overrides(data, overrides)
    if "runtime" in model.model_fields:
        runtime = data.get("runtime") or {}
        if not isinstance(runtime, dict):
            raise ConfigError(f"{source}: runtime: must be a mapping")
        data = {**data, "runtime": deep_merge(load_profile(profile, config_dir), runtime)}
    return validate(model, data, source)


def load_runtime(profile: str | None = None, config_dir: Path = CONFIG_DIR) -> RuntimeConfig:
    return RuntimeConfig.model_validate(load_profile(profile, config_dir))
