"""The demo corpus: real text that every install has offline, no download and no apt.

It is the long descriptions (README text) of the Python packages installed next to Refinery,
read from their METADATA files: real prose with headings, code and lists, and some natural
near-duplicates (sibling packages share boilerplate).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

MAX_CHARS = 3000  # a README's first part: keeps the demo's embedding step short on 2 CPUs


def build_demo_corpus(directory: str, max_docs: int = 250) -> str:
    """Write DIRECTORY/packages.jsonl (id, text, format, package, version, summary); returns
    its path."""
    seen: set[str] = set()
    records = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        name = dist.metadata["Name"]
        text = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if not name or name.lower() in seen or len(text) < 500:
            continue
        seen.add(name.lower())
        content_type = dist.metadata.get("Description-Content-Type") or "text/plain"
        records.append(
            {
                "id": f"pypi:{name.lower()}",
                "text": text[:MAX_CHARS],
                "format": content_type.split(";")[0].strip(),  # text/markdown: inline HTML goes
                "package": name,
                "version": dist.version,
                "summary": dist.metadata.get("Summary") or "",
            }
        )
    path = Path(directory) / "packages.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records[:max_docs]:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return str(path)
