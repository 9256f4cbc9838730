"""The dependency rules between the top-level packages, read from the source (imports inside
functions too): vectorindex knows nothing of the rest nor of Ray; refinery knows none of its
users; pipelines never import serve or jobs, and the two pipelines stand apart; serve never
imports jobs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "vectorindex": {"refinery", "pipelines", "serve", "jobs", "ray"},
    "refinery": {"pipelines", "serve", "jobs"},
    "pipelines": {"serve", "jobs"},
    "pipelines.documents": {"pipelines.logs"},
    "pipelines.logs": {"pipelines.documents"},
    "serve": {"jobs"},
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_none_of_what_it_must_not_know(package: str) -> None:
    folder = ROOT.joinpath(*package.split("."))
    files = [p for p in folder.rglob("*.py") if ".venv" not in p.parts]
    assert files, f"no source under {folder}"
    breaches = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in sorted(imported(path))
        if any(within(name, banned) for banned in FORBIDDEN[package])
    ]
    assert not breaches, "\n".join(breaches)
