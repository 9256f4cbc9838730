"""The tiny local Llama: built offline, deterministic, and served by the real vLLM engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refinery.config import LLMConfig
from refinery.llm import vllm_engine_kwargs
from refinery.tinyllm import CHAT_TEMPLATE, build_tiny_llama

PROMPT = [{"role": "user", "content": "What does Refinery do?"}]
MAX_TOKENS = 12


def test_model_directory_is_complete(tiny_llm_dir: Path) -> None:
    config = json.loads((tiny_llm_dir / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # CPU kernel's head_dim
    tokenizer = json.loads((tiny_llm_dir / "tokenizer_config.json").read_text())
    assert tokenizer.get("chat_template", CHAT_TEMPLATE) == CHAT_TEMPLATE
    assert any(tiny_llm_dir.glob("*.safetensors"))


def test_same_seed_same_weights_and_idempotent(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    a = build_tiny_llama(tmp_path / "a", seed=7)
    b = build_tiny_llama(tmp_path / "b", seed=7)
    c = build_tiny_llama(tmp_path / "c", seed=8)
    wa, wb, wc = (load_file(next(p.glob("*.safetensors"))) for p in (a, b, c))
    key = "model.embed_tokens.weight"
    assert wa[key].equal(wb[key])
    assert not wa[key].equal(wc[key])
    mtime = (a / "config.json").stat().st_mtime_ns
    build_tiny_llama(tmp_path / "a", seed=7)  # a rebuild of the same spec keeps the files
    assert (a / "config.json").stat().st_mtime_ns == mtime


def test_llm_path_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        vllm_engine_kwargs(LLMConfig(model=str(tmp_path / "missing")), str(tmp_path))


def reference_greedy_ids(model_dir: Path) -> list[int]:
    """Greedy decoding with the Hugging Face reference implementation, for comparison."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=MAX_TOKENS, do_sample=False, min_new_tokens=MAX_TOKENS
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.slow
def test_real_vllm_engine_generates_the_reference_tokens(tiny_llm_dir: Path) -> None:
    from vllm import LLM, SamplingParams

    llm = LLM(**vllm_engine_kwargs(LLMConfig(model=str(tiny_llm_dir)), str(tiny_llm_dir.parent)))
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    try:
        output = llm.chat(PROMPT, params)[0].outputs[0]
    finally:
        # Stop the engine process now, not at interpreter exit when logging is already closed.
        llm.llm_engine.engine_core.shutdown()
    token_ids = list(output.token_ids)
    assert len(token_ids) == MAX_TOKENS
    assert token_ids == reference_greedy_ids(tiny_llm_dir)
    assert output.text  # the tokenizer decodes what the engine produced
