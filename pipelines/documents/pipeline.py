"""A pipeline is a list of steps: built from the config's `steps:` list, run in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipelines.documents.chunk import Chunk
from pipelines.documents.clean import read_and_clean
from pipelines.documents.config import ReadConfig, StepSpec
from pipelines.documents.dedup import ExactDedup, MinHashDedup
from pipelines.documents.embed import Embed
from pipelines.documents.filters import GopherQuality, LengthFilter, RepetitionFilter
from pipelines.documents.formatters import HtmlToText, Normalize
from pipelines.documents.steps import DatasetStep, DocStep, RunContext, Step
from refinery.config import ConfigError
from refinery.inputs import list_input_files

if TYPE_CHECKING:
    from ray.data import Dataset

STEP_CLASSES: dict[str, type[Step]] = {
    cls.name: cls
    for cls in (
        HtmlToText,
        Normalize,
        LengthFilter,
        RepetitionFilter,
        GopherQuality,
        ExactDedup,
        MinHashDedup,
        Chunk,
        Embed,
    )  # fmt: skip
}


def build_steps(specs: Sequence[StepSpec]) -> list[Step]:
    """Step objects for the enabled entries, in order."""
    return [STEP_CLASSES[spec.step](spec) for spec in specs if spec.enabled]  # type: ignore[call-arg]


def split_steps(steps: Sequence[Step]) -> tuple[list[DocStep], list[DatasetStep]]:
    """Document steps run fused with the read, so they must all come first."""
    n_doc = 0
    while n_doc < len(steps) and isinstance(steps[n_doc], DocStep):
        n_doc += 1
    rest = list(steps[n_doc:])
    misplaced = [s.name for s in rest if not isinstance(s, DatasetStep)]
    if misplaced:
        raise ConfigError(
            f"steps: {', '.join(misplaced)}: document steps (formatters, filters) must come "
            "before dedup, chunk and embed"
        )
    return list(steps[:n_doc]), rest  # type: ignore[return-value]


def run_pipeline(source: str, read: ReadConfig, steps: Sequence[Step], ctx: RunContext) -> Dataset:
    """Read `source` and run the steps; the result is materialised."""
    doc_steps, dataset_steps = split_steps(steps)
    files = list_input_files(source)
    if not files:
        raise FileNotFoundError(f"input {source!r}: no files")
    ds = read_and_clean(files, read, doc_steps, ctx, annotators=dataset_steps)
    for step in dataset_steps:
        ds = step.apply(ds, ctx)
    return ds.materialize()
