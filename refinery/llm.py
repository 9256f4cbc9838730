"""vLLM engine settings from the config, shared by the Serve LLM deployment, the demo and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refinery.config import LLMConfig
from refinery.tinyllm import TINY_MODEL_NAME, build_tiny_llama


def resolve_llm_path(model: str, storage_root: str) -> str:
    """`tiny` -> the locally built model (built on first use); anything else is a directory."""
    if model == "tiny":
        # Absolute: Serve replicas and engine processes need not share this process's cwd.
        return str(build_tiny_llama(Path(storage_root) / "models" / TINY_MODEL_NAME).resolve())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"LLM model {model!r}: not a directory (use 'tiny' for the locally built test model); "
            "nothing is downloaded at run time"
        )
    return str(path.resolve())


def vllm_engine_kwargs(cfg: LLMConfig, storage_root: str) -> dict[str, Any]:
    """Keyword arguments for vllm.LLM / AsyncEngineArgs."""
    return {
        "model": resolve_llm_path(cfg.model, storage_root),
        "dtype": cfg.dtype,
        "max_model_len": cfg.max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "enforce_eager": cfg.enforce_eager,
    }
