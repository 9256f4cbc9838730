"""`refinery registry list|show|history|register|alias`: index snapshots as MLflow registered-model
versions (refinery/registry.py), and the aliases Serve loads them by."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from refinery.config import ConfigError
from refinery.registry import DEFAULT_NAME


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "registry", help="index snapshots as MLflow model versions; champion/challenger aliases"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="every registered version, oldest first")
    listing.add_argument("--json", action="store_true", help="as JSON")
    listing.set_defaults(func=_list)

    show = actions.add_parser("show", help="one version with its lineage (JSON)")
    show.add_argument("version", metavar="VERSION", help="a version number or an alias")
    show.set_defaults(func=_show)

    history = actions.add_parser("history", help="every alias move, oldest first")
    history.add_argument("--json", action="store_true", help="as JSON")
    history.set_defaults(func=_history)

    add = actions.add_parser("register", help="register a snapshot directory as a new version")
    add.add_argument("snapshot_dir", metavar="SNAPSHOT_DIR", help="DIR/index (path or URI)")
    add.add_argument("--alias", default=None, help="then point this alias at it (challenger)")
    add.add_argument("--why", default="registered", help="recorded with the alias move")
    add.add_argument(
        "--run-id", default=None, help="the pipeline run (default: from DIR/stats.json)"
    )
    add.add_argument(
        "--source", default=None, help="where the corpus was read (default: the run's input)"
    )
    add.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        default=[],
        metavar="K=V",
        help="a validation metric (repeatable)",
    )
    add.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="K=V",
        help="a parameter (repeatable)",
    )
    add.set_defaults(func=_register)

    alias = actions.add_parser("alias", help="point an alias at a version, recording why")
    alias.add_argument("alias", metavar="ALIAS", help="champion, challenger, ...")
    alias.add_argument("version", metavar="VERSION")
    alias.add_argument("--why", required=True, help="recorded in the alias history")
    alias.set_defaults(func=_alias)

    for sub in (listing, show, history, add, alias):
        sub.add_argument(
            "--tracking-uri",
            default=None,
            help="MLflow tracking URI (default: the profile's tracking.uri, "
            "MLFLOW_TRACKING_URI, then the sqlite store under storage.root the jobs log to)",
        )
        sub.add_argument("--name", default=DEFAULT_NAME, help="registered model name")
        sub.add_argument("--profile", default=None, help="runtime profile giving the store")


def _registry(args: argparse.Namespace) -> Any:
    from refinery.config import load_runtime
    from refinery.registry import IndexRegistry
    from refinery.tracking import tracking_uri

    runtime = load_runtime(args.profile)
    uri = args.tracking_uri or tracking_uri(runtime.tracking, runtime.storage)
    tracking = runtime.tracking
    return IndexRegistry(
        uri, args.name, tracking.experiment, tracking.max_retries, tracking.request_timeout_s
    )


def _answer(command: Any) -> Any:
    """A registry that answered no (an unknown version, a snapshot it cannot read) exits 1; an
    unreachable one is a ConnectionError, which the CLI reports and exits 2."""

    def run(args: argparse.Namespace) -> int:
        from refinery.manifest import SnapshotError
        from refinery.registry import RegistryError, RegistryUnreachable

        try:
            return command(args)
        except RegistryUnreachable:
            raise
        except (RegistryError, SnapshotError) as error:
            print(f"refinery: registry: {error}", file=sys.stderr)
            return 1

    return run


@_answer
def _list(args: argparse.Namespace) -> int:
    versions = _registry(args).versions()
    if args.json:
        print(json.dumps(versions, indent=2))
        return 0
    rows = [("VERSION", "ALIASES", "SNAPSHOT", "COUNT", "MODEL", "CORPUS", "SOURCE")]
    for v in versions:
        tags = v["tags"]
        rows.append(
            (
                v["version"],
                ",".join(v["aliases"]) or "-",
                tags.get("snapshot_version", "-"),
                tags.get("count", "-"),
                tags.get("model", "-"),
                tags.get("corpus_fingerprint", "-")[:12],
                v["source"],
            )
        )
    print(_table(rows))
    return 0


@_answer
def _show(args: argparse.Namespace) -> int:
    print(json.dumps(_registry(args).show(args.version), indent=2))
    return 0


@_answer
def _history(args: argparse.Namespace) -> int:
    moves = _registry(args).history()
    if args.json:
        print(json.dumps(moves, indent=2))
        return 0
    rows = [("WHEN", "ALIAS", "FROM", "TO", "BY", "WHY")]
    for m in moves:
        rows.append((m["at"], m["alias"], m["from"] or "-", m["to"], m.get("by") or "-", m["why"]))
    print(_table(rows))
    return 0


@_answer
def _register(args: argparse.Namespace) -> int:
    registry = _registry(args)
    version = registry.register(
        args.snapshot_dir,
        run_id=args.run_id,
        metrics={k: _number(k, v) for k, v in _pairs(args.metrics, "--metric").items()},
        params=_pairs(args.params, "--param"),
        source=args.source,
    )
    print(f"{registry.name} version {version}: {args.snapshot_dir}")
    if args.alias:
        _print_move(registry.set_alias(args.alias, version, args.why))
    return 0


@_answer
def _alias(args: argparse.Namespace) -> int:
    _print_move(_registry(args).set_alias(args.alias, args.version, args.why))
    return 0


def _print_move(move: dict[str, Any]) -> None:
    print(f"{move['alias']}: {move['from'] or '-'} -> {move['to']} ({move['why']})")


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def _number(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--metric {key}={value}: a metric is a number") from None


def _table(rows: list[tuple[Any, ...]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
