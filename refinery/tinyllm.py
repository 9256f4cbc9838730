"""A tiny Llama model built locally, so every LLM path runs the real vLLM engine offline.

Random weights (seeded, so the same seed gives the same model and the same greedy tokens),
a byte-level BPE tokenizer trained here on a few lines, and a chat template. The shape is
one vLLM's CPU attention kernel accepts: hidden 128, 2 heads (head_dim 64), 2 layers.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

TINY_MODEL_NAME = "refinery-tiny-llama"
FORMAT_VERSION = 1

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}\n{% endif %}"
)

# A few lines of plain English and code for the tokenizer; byte-level BPE covers any input.
TOKENIZER_TEXT = [
    "Refinery turns raw documents and LLM logs into served, searchable knowledge on Ray.",
    "Ray Data jobs clean, deduplicate and embed documents in parallel on a laptop or a cluster.",
    "Ray Serve hosts the vector index, the embedder and the language model behind batching.",
    "What is the capital of France? The capital of France is Paris.",
    "def search(query, k=10): return index.search(embed(query), k)",
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins.",
    "Errors should never pass silently. Unless explicitly silenced.",
    "Latency percentiles, error rates and token costs per model and per hour.",
]


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS, PAD, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TOKENIZER_TEXT * 4, trainer=trainer)
    return tokenizer


def _write_model(out: Path, seed: int, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size),
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        # Wider than the usual 0.02 so logits are peaked: fewer near ties in greedy decoding.
        # In bfloat16 some remain, and vLLM's CPU kernels round differently per CPU feature,
        # so comparisons with a reference run both sides in float32.
        initializer_range=0.5,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    fast.save_pretrained(out)


def build_tiny_llama(output: str | Path, seed: int = 0, vocab_size: int = 512) -> Path:
    """Write the model directory (idempotent: an existing build of the same seed is kept)."""
    out = Path(output).expanduser().resolve()
    marker = out / "refinery_tiny.json"
    spec = {
        "name": TINY_MODEL_NAME,
        "format": FORMAT_VERSION,
        "seed": seed,
        "vocab_size": vocab_size,
    }
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a crash never leaves a half-written model.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out.parent))
    try:
        _write_model(staging, seed, vocab_size)
        (staging / "refinery_tiny.json").write_text(json.dumps(spec))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
