"""The document job's config: `read`, the `steps` list (a pipeline, in order) and `write`.

Each entry of `steps` names its step class with `step:` and carries that step's settings;
pydantic picks the settings model by that name, so a typo in a key is a ConfigError that
names the step. Leaving a step out of the list (or `enabled: false`) switches it off; every
threshold of a filter can be `null` to switch that one rule off.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from refinery.config import JobConfig, StrictModel


class ReadConfig(StrictModel):
    text_field: str = Field("text", description="JSONL/Parquet column that holds the text")
    id_field: str | None = Field(
        "id", description="Column with a document id; missing: <file>#<record number>"
    )
    encodings: list[str] = Field(
        default_factory=lambda: ["utf-8"],
        description="Tried in order when a file has no BOM and (HTML/XML) declares no charset",
    )
    max_file_bytes: int = Field(
        1 << 29,
        ge=1,
        description="Largest file read, once decompressed; a larger one is quarantined",
    )
    files_per_task: int | None = Field(
        None, ge=1, description="Files read by one Ray task; null: about 4 tasks per CPU"
    )


class StepConfig(StrictModel):
    enabled: bool = True


class HtmlToTextConfig(StepConfig):
    step: Literal["html_to_text"] = "html_to_text"


class NormalizeConfig(StepConfig):
    step: Literal["normalize"] = "normalize"
    form: Literal["NFC", "NFKC"] = "NFC"


class LengthFilterConfig(StepConfig):
    step: Literal["length"] = "length"
    min_chars: int | None = Field(100, ge=0)
    max_chars: int | None = Field(100_000, ge=1)


class RepetitionFilterConfig(StepConfig):
    step: Literal["repetition"] = "repetition"
    max_run: int = Field(10, ge=1, description="Longest allowed run of one character")
    ignore_chars: str = Field("", description="Characters allowed to repeat (rules, underlines)")


class GopherConfig(StepConfig):
    step: Literal["gopher"] = "gopher"
    min_words: int | None = 50
    max_words: int | None = 100_000
    min_mean_word_length: float | None = 3.0
    max_mean_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] = Field(
        default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"]
    )


class ExactDedupConfig(StepConfig):
    step: Literal["exact_dedup"] = "exact_dedup"
    partitions: int = Field(8, ge=1, description="Hash partitions of the shuffle")


class MinHashConfig(StepConfig):
    step: Literal["minhash_dedup"] = "minhash_dedup"
    threshold: float = Field(0.8, gt=0, le=1)
    num_perm: int = Field(128, ge=2)
    ngram: int = Field(5, ge=1, description="Word n-gram shingles")
    bands: int | None = Field(14, ge=1, description="None: chosen for recall at the threshold")
    rows: int | None = Field(8, ge=1)
    seed: int = 1
    verify: bool = Field(True, description="Exact Jaccard of candidate pairs drops false positives")
    partitions: int = Field(8, ge=1, description="Hash partitions of the band-key shuffle")
    max_bucket_pairs: int = Field(
        50, ge=2, description="Buckets larger than this link to their smallest id only"
    )

    @model_validator(mode="after")
    def _bands_fit(self) -> MinHashConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (then they are chosen)")
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} > num_perm {self.num_perm}")
        return self


class ChunkConfig(StepConfig):
    step: Literal["chunk"] = "chunk"
    size: int = Field(512, ge=8, description="Tokens; capped to the model's max_seq_length")
    overlap: int = Field(50, ge=0)


class EmbedConfig(StepConfig):
    step: Literal["embed"] = "embed"
    batch_size: int | None = Field(None, ge=1, description="None: runtime.embedding.batch_size")
    actors: int | None = Field(
        None, ge=1, description="None: the CPUs Ray offers / cpus_per_actor (on GPU: 1)"
    )
    cpus_per_actor: float | None = Field(
        None,
        gt=0,
        description="Also the torch thread count. None: the CPUs of the largest node, at most "
        "4, and no more than Ray has free (on GPU: 1)",
    )
    max_restarts: int = Field(
        3, ge=0, description="Restarts of a dead actor, whose batches then run again"
    )


StepSpec = Annotated[
    HtmlToTextConfig
    | NormalizeConfig
    | LengthFilterConfig
    | RepetitionFilterConfig
    | GopherConfig
    | ExactDedupConfig
    | MinHashConfig
    | ChunkConfig
    | EmbedConfig,
    Field(discriminator="step"),
]


def default_steps() -> list[StepSpec]:
    return [
        HtmlToTextConfig(),
        NormalizeConfig(),
        LengthFilterConfig(),
        RepetitionFilterConfig(),
        GopherConfig(),
        ExactDedupConfig(),
        MinHashConfig(),
        ChunkConfig(),
        EmbedConfig(),
    ]


class WriteConfig(StrictModel):
    index: bool = Field(True, description="vectorindex snapshot under DIR/index/")
    metric: Literal["ip"] = Field("ip", description="Inner product of normalised vectors")
    qdrant_batch_size: int = Field(256, ge=1)
    qdrant_retries: int = Field(3, ge=1)


class DocsJobConfig(JobConfig):
    read: ReadConfig = Field(default_factory=ReadConfig)
    steps: list[StepSpec] = Field(default_factory=default_steps)
    write: WriteConfig = Field(default_factory=WriteConfig)
