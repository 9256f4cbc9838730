"""The index registry: each published index snapshot as an MLflow registered-model version.

A version's source is the snapshot directory; its tags say what the snapshot holds (model,
dimension, metric, count, corpus fingerprint, snapshot version); its run is the pipeline run
that built it, which carries the corpus as a dataset input, the parameters and the validation
metrics. Aliases (`champion`, `challenger`) name the versions Serve loads through
`models:/NAME@ALIAS`.

MLflow keeps only where an alias points now, so every move is also recorded, as one tag on the
registered model per move: one write per move, visible wherever the registered model is, with
no artifact store to reach and no read-modify-write that two concurrent moves could lose.

MLflow is imported on first use: a Serve replica whose snapshot is a plain path never pays for it.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from refinery.manifest import Manifest
from refinery.redact import redact, redact_text
from refinery.storage import read_text

DEFAULT_NAME = "refinery-index"
SCHEME = "models:/"
HISTORY_PREFIX = "refinery.alias_history."
DATASET_NAME = "corpus"
DATASET_CONTEXT = "corpus"
# MLflow stores a dataset digest in a column this wide; the full fingerprint goes in the profile.
MAX_DIGEST_CHARS = 36
# Errors that mean the registry answered and the thing asked for is not there or not allowed;
# every other failure means the registry itself could not be used.
_ANSWERED = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS"}

T = TypeVar("T")


class RegistryError(Exception):
    """A registry request that cannot be answered as asked; the message says which and why."""


class RegistryUnreachable(RegistryError, ConnectionError):
    """The tracking server or store could not be used at all; the message names its URI."""


@dataclass(frozen=True)
class ModelURI:
    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelURI | None:
        """`models:/NAME@ALIAS` or `models:/NAME/VERSION`; None for anything else."""
        if not uri.startswith(SCHEME):
            return None
        rest = uri[len(SCHEME) :].strip("/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if name and alias and "/" not in alias:
                return cls(name, alias=alias)
        else:
            name, _, version = rest.rpartition("/")
            if name and version.isdigit():
                return cls(name, version=version)
        raise RegistryError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


def resolve_snapshot(snapshot: str | None, registry_uri: str | None = None) -> str | None:
    """The snapshot directory `snapshot` names: itself, unless it is a `models:/` URI, which is
    looked up in the registry at `registry_uri` (else MLFLOW_TRACKING_URI)."""
    parsed = ModelURI.parse(snapshot) if snapshot else None
    if parsed is None:
        return snapshot
    uri = registry_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RegistryError(
            f"{snapshot}: a models:/ snapshot needs a registry: set index.registry_uri "
            "or MLFLOW_TRACKING_URI"
        )
    return IndexRegistry(uri, parsed.name).resolve(snapshot)


class IndexRegistry:
    """Index snapshots registered under one registered-model `name` in the MLflow at
    `tracking_uri` (the registry lives in the same store)."""

    def __init__(
        self,
        tracking_uri: str,
        name: str = DEFAULT_NAME,
        experiment: str = "refinery",
        max_retries: int = 2,
        request_timeout_s: int = 15,
    ) -> None:
        self.uri = tracking_uri
        self.name = name
        self.experiment = experiment
        # MLflow's own defaults retry an unreachable server for minutes: a CLI or a replica
        # starting should say so instead.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(request_timeout_s))
        self._client: Any = None

    # -- writing ------------------------------------------------------------------------------

    def register(
        self,
        snapshot_dir: str,
        run_id: str | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> str:
        """Register the snapshot in `snapshot_dir` as a new version; its number.

        `run_id` is the pipeline run that built it; without one, the run recorded in the job's
        stats.json beside the snapshot when that run wrote this very snapshot, else a
        registration run of its own. `source` is where the corpus was read from (default: the
        pipeline run's `input` param). Registering the same snapshot again returns its version.
        """
        snapshot_dir = snapshot_dir.rstrip("/")
        manifest = Manifest.read(snapshot_dir)
        existing = self._existing(snapshot_dir, manifest)
        if existing is not None:
            return existing
        stats = _job_stats(snapshot_dir, manifest)
        run_id = run_id or stats.get("mlflow_run_id")
        if run_id:
            run = self._call(f"get run {run_id}", lambda c: c.get_run(run_id))
            source = source or run.data.params.get("input")
        else:
            run_id = self._registration_run(manifest)
        self._log_lineage(run_id, manifest, stats, metrics, params, source or snapshot_dir)
        self._ensure_registered_model()
        version = self._call(
            f"create a version of {self.name}",
            lambda c: c.create_model_version(
                self.name,
                snapshot_dir,
                run_id=run_id,
                tags=_version_tags(manifest),
                description=f"index snapshot {manifest.version or snapshot_dir}",
            ),
        )
        return str(version.version)

    def set_alias(self, alias: str, version: str | int, why: str) -> dict[str, Any]:
        """Point `alias` at `version` and record the move (when, from, to, why, who).

        The record is written before the move and taken back if the move fails: history never
        lacks a move that happened."""
        version = str(version)
        if not why.strip():
            raise RegistryError(f"moving {alias}: say why")
        self._call(
            f"get {self.name} version {version}", lambda c: c.get_model_version(self.name, version)
        )
        move = {
            "at": datetime.now(UTC).isoformat(),
            "alias": alias,
            "from": self._alias_version(alias),
            "to": version,
            "why": why,
            "by": _user(),
        }
        key = f"{HISTORY_PREFIX}{time.time_ns():020d}.{secrets.token_hex(3)}"
        value = json.dumps(move)
        self._call(
            f"record the move of {alias}",
            lambda c: c.set_registered_model_tag(self.name, key, value),
        )
        try:
            self._call(
                f"move {alias} to version {version}",
                lambda c: c.set_registered_model_alias(self.name, alias, version),
            )
        except RegistryError:
            # The move's own error is the one to report.
            with contextlib.suppress(Exception):
                self._client.delete_registered_model_tag(self.name, key)
            raise
        return move

    # -- reading ------------------------------------------------------------------------------

    def resolve(self, uri: str) -> str:
        """The snapshot directory of `models:/NAME@ALIAS` or `models:/NAME/VERSION`; any other
        string unchanged. Refuses a directory that no longer holds the registered snapshot (a
        later run published over it), rather than serve another corpus under the same name."""
        parsed = ModelURI.parse(uri)
        if parsed is None:
            return uri
        registry = self if parsed.name == self.name else self._named(parsed.name)
        version = registry._version(parsed.alias or parsed.version or "")
        directory = version.source
        registered = version.tags.get("snapshot_version")
        fingerprint = version.tags.get("corpus_fingerprint")
        manifest = Manifest.read(directory)
        if (registered and manifest.version != registered) or (
            fingerprint and manifest.corpus_fingerprint != fingerprint
        ):
            raise RegistryError(
                f"{uri}: version {version.version} is snapshot {registered} of "
                f"{directory}, which now holds snapshot {manifest.version}: it was "
                "replaced after registration"
            )
        return directory

    def versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first."""
        model = self._call(f"get {self.name}", lambda c: c.get_registered_model(self.name))
        found = self._call(
            f"list versions of {self.name}",
            lambda c: c.search_model_versions(f"name = '{self.name}'"),
        )
        # A search leaves each version's aliases out; the registered model has them all.
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        return [
            {**_summary(v), "aliases": sorted(aliases.get(str(v.version), []))}
            for v in sorted(found, key=lambda v: int(v.version))
        ]

    def show(self, version: str | int) -> dict[str, Any]:
        """One version (a number or an alias) with its lineage: the run, its corpus input,
        parameters and metrics."""
        found = self._version(str(version))
        shown = _summary(found)
        if found.run_id:
            run = self._call(f"get run {found.run_id}", lambda c: c.get_run(found.run_id))
            shown["run"] = {
                "run_id": found.run_id,
                "name": run.info.run_name,
                "status": run.info.status,
                "params": dict(run.data.params),
                "metrics": dict(run.data.metrics),
                "inputs": [_dataset(d) for d in run.inputs.dataset_inputs],
            }
        return shown

    def history(self) -> list[dict[str, Any]]:
        """Every alias move, oldest first."""
        model = self._call(f"get {self.name}", lambda c: c.get_registered_model(self.name))
        keys = sorted(key for key in model.tags if key.startswith(HISTORY_PREFIX))
        return [json.loads(model.tags[key]) for key in keys]

    # -- MLflow -------------------------------------------------------------------------------

    def _call(self, what: str, request: Callable[[Any], T]) -> T:
        """One registry request; its failure as a RegistryError saying what and where."""
        from mlflow.exceptions import MlflowException

        where = redact_text(self.uri)
        try:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            return request(self._client)
        except MlflowException as error:
            if error.error_code in _ANSWERED:
                raise RegistryError(f"{what}: {redact_text(error.message)}") from None
            message = f"{what}: MLflow at {where} failed: {redact_text(str(error))[:500]}"
            raise RegistryUnreachable(message) from None
        except Exception as error:  # a store or connection that cannot be used at all
            message = f"{what}: MLflow at {where} unreachable: {type(error).__name__}: {error}"
            raise RegistryUnreachable(redact_text(message)[:1000]) from None

    def _named(self, name: str) -> IndexRegistry:
        other = IndexRegistry(self.uri, name, self.experiment)
        other._client = self._client
        return other

    def _version(self, version_or_alias: str) -> Any:
        what = f"{self.name} {'version' if version_or_alias.isdigit() else 'alias'} "
        if version_or_alias.isdigit():
            return self._call(
                what + version_or_alias, lambda c: c.get_model_version(self.name, version_or_alias)
            )
        alias = version_or_alias.lstrip("@")
        return self._call(what + alias, lambda c: c.get_model_version_by_alias(self.name, alias))

    def _alias_version(self, alias: str) -> str | None:
        try:
            return str(self._version(alias).version)
        except RegistryUnreachable:
            raise
        except RegistryError:  # the alias is new
            return None

    def _existing(self, snapshot_dir: str, manifest: Manifest) -> str | None:
        try:
            versions = self.versions()
        except RegistryUnreachable:
            raise
        except RegistryError:  # no registered model yet
            return None
        wanted, identity = _version_tags(manifest), ("snapshot_version", "corpus_fingerprint")
        for version in reversed(versions):
            tags = version["tags"]
            same = all(tags.get(key) == wanted.get(key) for key in identity)
            if version["source"] == snapshot_dir and same:
                return version["version"]
        return None

    def _ensure_registered_model(self) -> None:
        try:
            self._call(f"get {self.name}", lambda c: c.get_registered_model(self.name))
            return
        except RegistryUnreachable:
            raise
        except RegistryError:
            pass
        try:
            self._call(
                f"create {self.name}",
                lambda c: c.create_registered_model(
                    self.name, description="Refinery index snapshots"
                ),
            )
        except RegistryUnreachable:
            raise
        except RegistryError:  # created meanwhile by another registration
            pass

    def _registration_run(self, manifest: Manifest) -> str:
        def create(client: Any) -> str:
            experiment = client.get_experiment_by_name(self.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else client.create_experiment(self.experiment)
            )
            run = client.create_run(
                experiment_id, run_name="register-index", tags={"refinery.job": "register-index"}
            )
            client.set_terminated(run.info.run_id)
            return run.info.run_id

        return self._call(f"create a registration run in {self.experiment}", create)

    def _log_lineage(
        self,
        run_id: str,
        manifest: Manifest,
        stats: Mapping[str, Any],
        metrics: Mapping[str, float] | None,
        params: Mapping[str, Any] | None,
        source: str,
    ) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

        from refinery.tracking import flatten

        try:
            origin = resolve_dataset_source(source)
            source_type, source_json = origin._get_source_type(), origin.to_json()
        except Exception:  # a source MLflow has no type for is still recorded, as text
            source_type, source_json = "refinery", json.dumps({"uri": source})
        fingerprint = manifest.corpus_fingerprint or ""
        profile = {
            "corpus_fingerprint": fingerprint,
            "chunks": manifest.count,
            **({"steps": _step_counts(stats)} if stats.get("steps") else {}),
        }
        corpus = Dataset(
            name=DATASET_NAME,
            digest=fingerprint[:MAX_DIGEST_CHARS] or "none",
            source_type=source_type,
            source=source_json,
            profile=json.dumps(profile),
        )
        inputs = [DatasetInput(corpus, [InputTag("mlflow.data.context", DATASET_CONTEXT)])]
        now = int(time.time() * 1000)
        logged_metrics = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        logged_params = [Param(k, v) for k, v in flatten(redact(dict(params or {}))).items()]

        def log(client: Any) -> None:
            client.log_inputs(run_id, datasets=inputs)
            if logged_metrics:
                client.log_batch(run_id, metrics=logged_metrics)
            # log_batch refuses more params than its batch limit in one call.
            for start in range(0, len(logged_params), 100):
                client.log_batch(run_id, params=logged_params[start : start + 100])

        self._call(f"log the lineage to run {run_id}", log)


def _version_tags(manifest: Manifest) -> dict[str, str]:
    tags = {
        "model": manifest.model,
        "dimension": manifest.dimension,
        "metric": manifest.metric,
        "count": manifest.count,
        "corpus_fingerprint": manifest.corpus_fingerprint,
        "snapshot_version": manifest.version,
    }
    return {key: str(value) for key, value in tags.items() if value is not None}


def _summary(version: Any) -> dict[str, Any]:
    return {
        "version": str(version.version),
        "aliases": sorted(version.aliases or []),
        "source": version.source,
        "run_id": version.run_id or None,
        "created_at": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(),
        "tags": dict(version.tags),
    }


def _dataset(dataset_input: Any) -> dict[str, Any]:
    dataset = dataset_input.dataset
    return {
        "name": dataset.name,
        "digest": dataset.digest,
        "source_type": dataset.source_type,
        "source": json.loads(dataset.source) if dataset.source else None,
        "profile": json.loads(dataset.profile) if dataset.profile else None,
        "context": {tag.key: tag.value for tag in dataset_input.tags}.get("mlflow.data.context"),
    }


def _job_stats(snapshot_dir: str, manifest: Manifest) -> dict[str, Any]:
    """The documents job's stats.json beside DIR/index, when that run wrote this snapshot: a
    later run that failed before publishing leaves its own stats.json over an older snapshot."""
    parent, _, _ = snapshot_dir.rpartition("/")
    try:
        stats = json.loads(read_text(f"{parent or '.'}/stats.json"))
    except (OSError, ValueError):
        return {}
    if not isinstance(stats, dict) or not isinstance(stats.get("outputs"), dict):
        return {}
    return stats if stats["outputs"].get("index") == manifest.index else {}


def _step_counts(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {key: step.get(key) for key in ("rows_in", "rows_out") if key in step}
        for name, step in stats["steps"].items()
        if isinstance(step, Mapping)
    }


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container is not a reason to refuse a move
        return None
