"""Step base classes. A pipeline is a list of steps, in order:

- DocStep: one document at a time (formatters rewrite the text, filters keep or drop). Runs of
  consecutive DocSteps are fused into one Ray Data map stage.
- DatasetStep: a whole-dataset operation on Ray Data (dedup shuffles, chunking, embedding).

Counting lives here, not in each step: a filter only answers keep or drop (and why), and the
base class turns that into a drop reason the job counts per step and rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from pipelines.documents.text import token_hashes
from refinery.config import RuntimeConfig
from refinery.runstats import RunStats

if TYPE_CHECKING:
    from ray.data import Dataset

Doc = dict[str, Any]


class Step(ABC):
    name: ClassVar[str]


class DocStep(Step):
    @abstractmethod
    def process(self, doc: Doc) -> str | None:
        """Update `doc` in place; return the rule that drops it, or None to keep it."""


class Formatter(DocStep):
    """Rewrites the text; a document left with no text is dropped by rule 'empty'."""

    def applies(self, doc: Doc) -> bool:
        return True

    @abstractmethod
    def format(self, text: str) -> str: ...

    def rewrite(self, doc: Doc) -> str:
        """The new text of a document the step applies to (a step whose rewrite depends on
        more than the text overrides this)."""
        return self.format(doc["text"])

    def process(self, doc: Doc) -> str | None:
        if self.applies(doc):
            doc["text"] = self.rewrite(doc)
        return None if doc["text"] else "empty"


class Filter(DocStep):
    """Answers keep (True), drop (False: rule = step name) or drop by a named rule (a str)."""

    @abstractmethod
    def filter(self, doc: Doc) -> bool | str: ...

    def process(self, doc: Doc) -> str | None:
        verdict = self.filter(doc)
        if verdict is True:
            return None
        return verdict or self.name


@dataclass
class RunContext:
    """What dataset steps need from the job: settings, counters, where outputs go."""

    runtime: RuntimeConfig
    stats: RunStats
    output: str
    params: dict[str, Any] = field(default_factory=dict)


class DocBatch:
    """The kept documents of one read block, with the forms of their text that more than one
    dataset step derives its columns from, each computed at most once."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    @cached_property
    def token_hashes(self) -> list[np.ndarray]:
        return token_hashes(self.table["text"].to_pylist())


class DatasetStep(Step):
    def annotate(self, batch: DocBatch) -> dict[str, pa.Array]:
        """Columns this step needs per document (a hash, a signature), computed for the kept
        documents inside the read stage, while their text is in memory: the step then needs
        no pass of its own over the text. The default adds none."""
        return {}

    @abstractmethod
    def apply(self, ds: Dataset, ctx: RunContext) -> Dataset:
        """The dataset after this step; records its counts in ctx.stats.step(self.name)."""
