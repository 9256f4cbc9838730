"""Test corpora with planted near-duplicates whose Jaccard similarity is known exactly.

Base documents are random words from a large vocabulary (unrelated documents share almost
no 5-grams); variants of some bases are made by word substitutions, reordering of
paragraphs, and insertions; a third of all documents carry the same boilerplate header and
footer, which raises the similarity of unrelated documents without making them duplicates.
The true Jaccard of every pair is computed afterwards with the pipeline's own shingles.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from pipelines.documents.config import ExactDedupConfig, MinHashConfig
from pipelines.documents.pipeline import build_steps
from pipelines.documents.steps import Step
from pipelines.documents.text import jaccard, shingles

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_STOP = ["the", "and", "of", "to", "with"]


def vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    words = {"".join(rng.choices(_LETTERS, k=rng.randint(3, 9))) for _ in range(size * 2)}
    return sorted(words)[:size]


def _paragraphs(rng: random.Random, vocab: list[str], n_words: int) -> list[list[str]]:
    words = rng.choices(vocab, k=n_words)
    cut = sorted(rng.sample(range(1, n_words), 3))
    return [words[a:b] for a, b in itertools.pairwise([0, *cut, n_words])]


def _variant(rng: random.Random, vocab: list[str], paras: list[list[str]]) -> list[list[str]]:
    paras = [list(p) for p in paras]
    edit = rng.choice(["substitute", "reorder", "insert"])
    rate = rng.choice([0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05])
    if edit == "reorder":
        rng.shuffle(paras)
    for p in paras:
        for i in range(len(p)):
            if rng.random() < rate:
                if edit == "insert":
                    p.insert(i, rng.choice(vocab))
                else:
                    p[i] = rng.choice(vocab)
    return paras


def planted_corpus(n_base: int = 150, n_with_variants: int = 110, seed: int = 0) -> list[dict]:
    """Documents {id, text}: n_base originals plus 1-3 variants of n_with_variants of them."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    header = rng.choices(vocab, k=30)
    footer = rng.choices(vocab, k=30)
    docs = []
    for b in range(n_base):
        paras = _paragraphs(rng, vocab, rng.randint(150, 400))
        versions = [paras]
        if b < n_with_variants:
            versions += [_variant(rng, vocab, paras) for _ in range(rng.randint(1, 3))]
        for v, version in enumerate(versions):
            body = [" ".join(p) for p in version]
            if rng.random() < 0.33:
                body = [" ".join(header), *body, " ".join(footer)]
            docs.append({"id": f"doc-{b:04d}-{v}", "text": "\n\n".join(body)})
    rng.shuffle(docs)
    return docs


def true_jaccard(docs: list[dict], ngram: int = 5) -> dict[tuple[str, str], float]:
    """Exact Jaccard of every pair with any shared shingle, keyed by (smaller id, larger id)."""
    sets = {d["id"]: shingles(d["text"], ngram) for d in docs}
    out = {}
    for a, b in itertools.combinations(sorted(sets), 2):
        if not sets[a].isdisjoint(sets[b]):
            out[(a, b)] = jaccard(sets[a], sets[b])
    return out


def write_jsonl(docs: list[dict], directory: Path, files: int = 4) -> Path:
    """The corpus split over several JSONL files (so reads run as several tasks)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        with (directory / f"part-{i}.jsonl").open("w", encoding="utf-8") as out:
            for doc in docs[i::files]:
                out.write(json.dumps(doc) + "\n")
    return directory


def dedup_steps(partitions: int) -> list[Step]:
    """Exact then near dedup with the given shuffle partitions, defaults otherwise."""
    return build_steps(
        [ExactDedupConfig(partitions=partitions), MinHashConfig(partitions=partitions)]
    )


def prose(seed: int, words: int = 80) -> str:
    """Text every filter keeps, sharing no 5-gram with another seed's."""
    rng = random.Random(seed)
    vocab = vocabulary(rng, 500)
    out = [rng.choice(_STOP) if i % 4 == 0 else rng.choice(vocab) for i in range(words)]
    return " ".join(out).capitalize() + "."
