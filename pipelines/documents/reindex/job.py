"""The reindex build: the next index version from the corpus, next to the champion, validated,
then registered as `challenger`. Nothing that serves changes here: the champion's files stay
where they are (each version is a folder of its own under the output) and its alias stays.
Handing the version to a canary rollout is the job's (jobs/reindex.py): pipelines never
import serve/.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.documents.config import EmbedConfig
from pipelines.documents.embed import vector_column
from pipelines.documents.pipeline import build_steps, run_pipeline
from pipelines.documents.reindex import qdrant as reindex_qdrant
from pipelines.documents.reindex.build import (
    Champion,
    Embedding,
    assemble,
    corpus_hash_lookup,
    with_index_ids,
    write_version,
)
from pipelines.documents.reindex.config import VERSION_NAME, ReindexConfig, ReindexJobConfigBase
from pipelines.documents.reindex.fold import LogState, fold_log
from pipelines.documents.reindex.validate import failures, metrics, validate
from pipelines.documents.steps import RunContext
from pipelines.documents.write import new_version
from refinery.manifest import update_log_location
from refinery.qdrant import connect
from refinery.registry import IndexRegistry, ModelURI, RegistryError, RegistryUnreachable
from refinery.runstats import JobRejected, RunStats
from refinery.storage import is_uri, resolve, write_text
from refinery.tracking import Tracker, tracking_uri
from refinery.update_log import UpdateLog

CHAMPION, CHALLENGER = "champion", "challenger"


class ReindexRejected(JobRejected):
    """The new version failed validation: not registered, nothing served changed."""


@dataclass
class Outcome:
    version: str
    snapshot: str  # the new version's snapshot directory
    registry_version: str
    champion: Champion | None
    registry: IndexRegistry
    report: dict[str, Any] = field(default_factory=dict)


def registry_of(cfg: ReindexJobConfigBase) -> IndexRegistry:
    runtime = cfg.runtime
    uri = cfg.reindex.registry.uri or tracking_uri(runtime.tracking, runtime.storage)
    return IndexRegistry(uri, cfg.reindex.registry.name, experiment=runtime.tracking.experiment,
                         max_retries=runtime.tracking.max_retries,
                         request_timeout_s=runtime.tracking.request_timeout_s)  # fmt: skip


def find_champion(rc: ReindexConfig, registry: IndexRegistry) -> Champion | None:
    """The version to diff against; None before there is one (the first version is full)."""
    target = rc.champion or f"models:/{registry.name}@{CHAMPION}"
    parsed = ModelURI.parse(target)
    if parsed is None:
        return Champion.load(target)
    named = registry if parsed.name == registry.name else IndexRegistry(registry.uri, parsed.name)
    try:
        version = named.show(parsed.alias or parsed.version or "")["version"]
    except RegistryUnreachable:
        raise
    except RegistryError:
        return None
    return Champion.load(named.resolve(target), version)


def update_log_of(rc: ReindexConfig, champion: Champion | None) -> str | None:
    """The log to fold: the configured one, else the one the champion folded (a reindexed
    champion lives in a folder of its own), else Serve's default beside the champion."""
    if rc.update_log:
        location = rc.update_log
    elif champion is None:
        return None
    else:
        location = champion.state.location or update_log_location(champion.snapshot)
    return location if is_uri(location) else os.path.abspath(location)


def full_reason(rc: ReindexConfig, champion: Champion | None, model: str) -> str | None:
    """Why every chunk is embedded; None: an incremental run."""
    if champion is None:
        return "no champion"
    if rc.full:
        return "asked for (reindex.full)"
    if champion.manifest.model != model:
        return f"embedding model changed: champion {champion.manifest.model!r}, now {model!r}"
    if "vector" not in champion.table.column_names:
        return "the champion's documents hold no vectors"
    return None


def build(cfg: ReindexJobConfigBase, stats: RunStats, tracker: Tracker) -> Outcome:
    """Build, write, validate and register the next version; ReindexRejected when it fails
    validation (stats and the MLflow run say why)."""
    assert cfg.input and cfg.output  # the harness checks both before calling
    client = None
    if cfg.runtime.qdrant.enabled:
        client = connect(cfg.runtime.qdrant, cfg.runtime.storage.root)
        try:
            reindex_qdrant.check_alias(client, cfg.runtime.qdrant.collection)
        except BaseException:
            client.close()
            raise
    try:
        return _build(cfg, stats, tracker, client)
    finally:
        if client is not None:
            client.close()


def _build(cfg: ReindexJobConfigBase, stats: RunStats, tracker: Tracker, client: Any) -> Outcome:
    import ray

    rc = cfg.reindex
    model = cfg.runtime.embedding.model
    version = new_version()
    root = cfg.output.rstrip("/")
    out = f"{root}/{version}"
    ctx = RunContext(runtime=cfg.runtime, stats=stats, output=out)
    registry = registry_of(cfg)
    champion = find_champion(rc, registry)
    why_full = full_reason(rc, champion, model)
    report: dict[str, Any] = {
        "version": version,
        "champion": _champion_summary(champion),
        "mode": "full" if why_full else "incremental",
        "full_reason": why_full,
    }
    stats.extra["reindex"] = report

    embed_spec = next((s for s in cfg.steps if s.step == "embed" and s.enabled), EmbedConfig())
    steps = build_steps([s for s in cfg.steps if s.step != "embed"])
    ds = run_pipeline(cfg.input, cfg.read, steps, ctx)
    blocks = ray.get(ds.to_arrow_refs())
    if not sum(b.num_rows for b in blocks):
        report["validation"] = {"passed": False, "failed": ["chunks"]}
        raise ReindexRejected(f"{cfg.input}: the corpus yielded no chunks")
    chunks, hashes = with_index_ids(pa.concat_tables(blocks, promote_options="default"))

    with stats.timed("fold") as step:
        location = update_log_of(rc, champion)
        after = (champion.manifest.update_log_position or 0) if champion else 0
        state = LogState(dict(champion.state.ids) if champion else {}, location)
        lookup = corpus_hash_lookup(chunks, hashes)
        released = state.released(lookup.get)
        update_log = UpdateLog(location) if location else None
        folded = fold_log(update_log, after, state, lookup.get)
        step.rows_in += folded.upsert_entries + folded.delete_entries
    embedding = Embedding(cfg.runtime.embedding, embed_spec, rc.embed_in_driver_max)
    assembled = assemble(chunks, hashes, champion, why_full is None, folded, embedding, ctx)
    report["log"] = {**folded.summary(after, location), "released": len(released)}
    report["counts"] = assembled.counts.to_dict()

    with stats.timed("write") as step:
        table = assembled.table.append_column("vector", vector_column(assembled.vectors))
        step.rows_in += table.num_rows
        snapshot, index = write_version(out, version, table, model, folded.state,
                                        folded.position)  # fmt: skip
        collection = None
        if client is not None:
            alias = cfg.runtime.qdrant.collection
            collection, points = reindex_qdrant.write_collection(
                client, alias, version, table, cfg.write.qdrant_batch_size,
                cfg.write.qdrant_retries,
            )  # fmt: skip
            report["qdrant"] = {"alias": alias, "collection": collection, "points": points}
        step.rows_out += table.num_rows
    report.update(snapshot=snapshot, index=index, update_log_position=folded.position)

    with stats.timed("validate"):
        checks = validate(rc.validation, snapshot, assembled, champion, embedding)
    failed = failures(checks)
    report["validation"] = {
        "passed": not failed,
        "failed": [c.name for c in failed],
        "checks": [c.to_dict() for c in checks],
    }
    counts = {f"reindex.{k}": v for k, v in assembled.counts.to_dict().items()}
    tracker.log_metrics({**counts, **metrics(checks)})
    tracker.set_tags({"validation": "failed" if failed else "passed", "reindex.version": version})
    write_text(f"{out}/reindex.json", json.dumps(report, indent=2, default=str) + "\n")
    if failed:
        if collection is not None:  # never aliased: nothing reads it
            client.delete_collection(collection)
            report["qdrant"]["deleted"] = True
        reasons = "; ".join(f"{c.name}: {c.detail} (value {c.value}, limit {c.threshold})"
                            for c in failed)  # fmt: skip
        raise ReindexRejected(f"version {version} failed validation: {reasons}")

    with stats.timed("register"):
        number = registry.register(snapshot, run_id=tracker.run_id, metrics=metrics(checks),
                                   source=cfg.input)  # fmt: skip
        counted = assembled.counts
        why = (
            f"reindex {version} ({report['mode']}) passed validation: {counted.reused} chunks "
            f"reused, {counted.embedded} embedded, {counted.deleted} deleted"
        )
        registry.set_alias(CHALLENGER, number, why)
    report["registry"] = {"name": registry.name, "version": number, "alias": CHALLENGER}
    report["pruned"] = prune_versions(root, rc.keep_versions, _protected(registry, root, version))
    if collection is not None:
        alias = cfg.runtime.qdrant.collection
        previous = reindex_qdrant.switch_alias(client, alias, collection)
        pruned = reindex_qdrant.prune_collections(
            client, alias, rc.keep_versions, {collection, *([previous] if previous else [])}
        )
        report["qdrant"].update(previous=previous, pruned=pruned)
    write_text(f"{out}/reindex.json", json.dumps(report, indent=2, default=str) + "\n")
    return Outcome(version, snapshot, number, champion, registry, report)


def _champion_summary(champion: Champion | None) -> dict[str, Any] | None:
    if champion is None:
        return None
    m = champion.manifest
    return {
        "snapshot": champion.snapshot,
        "registry_version": champion.registry_version,
        "version": m.version,
        "model": m.model,
        "count": m.count,
        "update_log_position": m.update_log_position,
    }


def _protected(registry: IndexRegistry, root: str, current: str) -> set[str]:
    """Version folders under `root` that an alias names (the champion serving, the challenger
    about to, their predecessors a rollback goes back to) and the one just written."""
    names = {current}
    for version in registry.versions():
        if version["aliases"]:
            source = version["source"].rstrip("/")
            parent, _, _ = source.rpartition("/")
            folder_root, _, name = parent.rpartition("/")
            if resolve(folder_root)[1] == resolve(root)[1]:
                names.add(name)
    return names


def prune_versions(root: str, keep: int, protected: set[str]) -> list[str]:
    """Removes the version folders under `root` but the newest `keep` and the protected ones;
    returns the removed names. Other entries (stats.json) are left alone."""
    fs, inner = resolve(root)
    entries = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    folders = sorted(
        e.base_name for e in entries
        if e.type == pafs.FileType.Directory and VERSION_NAME.fullmatch(e.base_name)
    )  # fmt: skip
    removed = [name for name in folders[:-keep] if name not in protected]
    for name in removed:
        fs.delete_dir(f"{inner}/{name}")
    return removed
