"""The store is a facade over two engines that stand apart: neither engine imports the other
nor the facade, and what they share (engine.py) imports none of the three."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LOGS = Path(__file__).resolve().parents[2] / "pipelines" / "logs"
MODULES = {
    "arrow_engine": {"ray_engine", "store"},
    "ray_engine": {"arrow_engine", "store"},
    "engine": {"arrow_engine", "ray_engine", "store"},
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", sorted(MODULES))
def test_engines_stand_apart(module: str) -> None:
    names = imported(LOGS / f"{module}.py")
    banned = {f"pipelines.logs.{other}" for other in MODULES[module]}
    assert not names & banned, sorted(names & banned)


def test_the_facade_hands_out_either_engine(tmp_path: Path) -> None:
    from pipelines.logs import LogStore

    (tmp_path / "a.jsonl").write_text('{"model": "m", "latency_ms": 1}\n')
    store = LogStore.from_jsonl(tmp_path, engine="arrow")
    assert store.engine == "arrow" and store.backend.name == "arrow"
    assert store.query().aggregate(metrics={"n": "count"})["n"].tolist() == [1]
