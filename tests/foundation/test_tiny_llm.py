"""The tiny local Llama: built offline, deterministic, and served by the real vLLM engine."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from refinery.config import LLMConfig
from refinery.llm import vllm_engine_kwargs
from refinery.tinyllm import CHAT_TEMPLATE, build_tiny_llama

PROMPT = [{"role": "user", "content": "What does Refinery do?"}]
MAX_TOKENS = 12
# How many alternatives the engine reports per step; each is checked against the reference.
TOP_LOGPROBS = 5
# Engine and reference both compute in float32, so they differ only in the order of summation
# (far below this). The served default is bfloat16, whose kernels vLLM picks by CPU feature
# (AVX2, AVX-512, AVX-512-BF16/AMX): there greedy tokens of random weights flip at near ties,
# so no token-exact comparison with a reference can hold on every CPU.
LOGPROB_TOLERANCE = 1e-3


@dataclass(frozen=True)
class EngineOutput:
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[dict[int, float]]  # per generated step: token id -> the engine's logprob
    text: str


@pytest.fixture(scope="module")
def float32_engine_output(tiny_llm_dir: Path) -> EngineOutput:
    from vllm import LLM, SamplingParams

    config = LLMConfig(model=str(tiny_llm_dir), dtype="float32")
    llm = LLM(**vllm_engine_kwargs(config, str(tiny_llm_dir.parent)))
    params = SamplingParams(
        temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True, logprobs=TOP_LOGPROBS
    )
    try:
        result = llm.chat(PROMPT, params)[0]
    finally:
        # Stop the engine process now, not at interpreter exit when logging is already closed.
        llm.llm_engine.engine_core.shutdown()
    output = result.outputs[0]
    return EngineOutput(
        prompt_ids=list(result.prompt_token_ids),
        token_ids=list(output.token_ids),
        logprobs=[{int(t): lp.logprob for t, lp in step.items()} for step in output.logprobs],
        text=output.text,
    )


def reference_prompt_ids(model_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    return tokenizer(prompt, add_special_tokens=False).input_ids


def reference_logprobs(model_dir: Path, prompt_ids: list[int], token_ids: list[int]):
    """The Hugging Face implementation's float32 log-probabilities at each generated step,
    fed the engine's own tokens (teacher forcing), so one near tie cannot derail the rest."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1)


def disagreements(reference, output: EngineOutput) -> list[str]:
    """Where the engine's greedy choice or its reported log-probabilities leave the reference."""
    problems = []
    for step, (chosen, reported) in enumerate(zip(output.token_ids, output.logprobs, strict=True)):
        row = reference[step]
        best = int(row.argmax())
        gap = float(row[best] - row[chosen])
        if gap > LOGPROB_TOLERANCE:
            problems.append(
                f"step {step}: engine chose {chosen}, reference {best} ({gap:.4f} nats better)"
            )
        for token, logprob in reported.items():
            expected = float(row[token])
            if abs(logprob - expected) > LOGPROB_TOLERANCE:
                problems.append(
                    f"step {step}: token {token} logprob {logprob:.4f} != {expected:.4f}"
                )
    return problems


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


@pytest.mark.slow
def test_real_vllm_engine_matches_the_reference(
    float32_engine_output: EngineOutput, tiny_llm_dir: Path
) -> None:
    output = float32_engine_output
    assert output.prompt_ids == reference_prompt_ids(tiny_llm_dir)  # same chat template
    assert len(output.token_ids) == MAX_TOKENS
    reference = reference_logprobs(tiny_llm_dir, output.prompt_ids, output.token_ids)
    assert disagreements(reference, output) == []
    assert output.text  # the tokenizer decodes what the engine produced


@pytest.mark.slow
def test_the_comparison_catches_a_wrong_engine(
    float32_engine_output: EngineOutput, tiny_llm_dir: Path, tmp_path: Path
) -> None:
    """An engine that computes another function (here: one weight matrix off by 1%) fails."""
    import torch
    from safetensors.torch import load_file, save_file

    perturbed = tmp_path / "perturbed"
    shutil.copytree(tiny_llm_dir, perturbed)
    weights_file = next(perturbed.glob("*.safetensors"))
    weights = load_file(weights_file)
    key = "model.layers.1.mlp.down_proj.weight"
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(weights[key].shape, generator=generator).to(weights[key].dtype)
    weights[key] = weights[key] + 0.01 * weights[key].abs().mean() * noise
    save_file(weights, weights_file, metadata={"format": "pt"})

    output = float32_engine_output
    reference = reference_logprobs(perturbed, output.prompt_ids, output.token_ids)
    assert disagreements(reference, output)
