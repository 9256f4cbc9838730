"""The project's documents stand alone and stay true to the tree: every file they link to or
name exists, and nothing in the repository points outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md", "docs/architecture.md", "bench/RESULTS.md"]
LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")
# A backticked path of the tree, e.g. `serve/canary/rollout.py` or `deploy/k8s/`.
NAMED_PATH = re.compile(
    r"`((?:refinery|pipelines|serve|jobs|vectorindex|bench|configs|tests|docs|deploy|scripts)"
    r"/[\w./-]*)`"
)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_link_and_named_path_exists(document: str) -> None:
    path = ROOT / document
    text = path.read_text()
    links = [link for link in LINK.findall(text) if "://" not in link]
    missing = [link for link in links if not (path.parent / link).exists()]
    missing += [named for named in NAMED_PATH.findall(text) if not (ROOT / named).exists()]
    assert not missing, f"{document} names what the tree does not hold: {missing}"


def test_nothing_tracked_points_outside_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = re.compile(r"\.\./shared|DESIGN\.md")
    offenders = [
        name
        for name in tracked
        if name.endswith((".py", ".md", ".yaml", ".toml", ".sh", ".txt"))
        and outside.search((ROOT / name).read_text(errors="replace"))
        and name != "tests/foundation/test_docs.py"
    ]
    assert not offenders, f"these files refer to files outside the repository: {offenders}"
