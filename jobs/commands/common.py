"""Flags shared by the subcommands that load a job config."""

from __future__ import annotations

import argparse
from typing import Any

from refinery.config import PROFILES


def add_config_flags(
    parser: argparse.ArgumentParser,
    default_config: str | None = None,
    default_profile: str | None = None,
) -> None:
    parser.add_argument(
        "--config", default=default_config, help=f"job config YAML (default: {default_config})"
    )
    parser.add_argument(
        "--profile",
        default=default_profile,
        help=f"runtime profile: {' | '.join(PROFILES)} or a YAML path (default: "
        f"{default_profile or 'cluster when RAY_ADDRESS is set, else local'})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one config value, checked against the config model (repeatable)",
    )


def add_address_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help="the cluster's Jobs API, http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS, "
        "RAY_ADDRESS, then the local head)",
    )


def add_job_flags(parser: argparse.ArgumentParser, job: str) -> None:
    """The flags one job has beyond its config's (`run` and `submit` take the same)."""
    if job == "reindex":
        parser.add_argument(
            "--full", action="store_true", help="embed every chunk (reindex.full: true)"
        )


def apply_job_flags(args: argparse.Namespace, cfg: Any) -> None:
    if getattr(args, "full", False):
        cfg.reindex.full = True
