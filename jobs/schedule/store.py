"""The scheduler's state: one JSON file per schedule under a root (a path or URI)."""

from __future__ import annotations

import json
import re

import pyarrow.fs as pafs

from jobs.schedule.model import NAME_PATTERN, ScheduleState
from refinery import storage


class ScheduleStore:
    """Read-modify-write without a lock: one scheduler actor owns the store and serializes its
    calls. Each write replaces the file whole (storage.write_text), so a crash mid-write leaves
    the previous state, never half of one."""

    def __init__(self, root: str, max_runs: int = 200) -> None:
        self.root = root.rstrip("/")
        self.max_runs = max_runs

    def path(self, name: str) -> str:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"schedule name {name!r}: lowercase letters, digits and '-'")
        return f"{self.root}/{name}.json"

    def load(self, name: str) -> ScheduleState | None:
        try:
            text = storage.read_text(self.path(name))
        except FileNotFoundError:
            return None
        return ScheduleState.model_validate_json(text)

    def save(self, state: ScheduleState) -> None:
        if len(state.runs) > self.max_runs:
            state = state.model_copy(update={"runs": state.runs[-self.max_runs :]})
        text = json.dumps(state.model_dump(mode="json"), indent=2)
        storage.write_text(self.path(state.spec.name), text)

    def delete(self, name: str) -> bool:
        fs, inner = storage.resolve(self.path(name))
        try:
            fs.delete_file(inner)
        except FileNotFoundError:
            return False
        return True

    def names(self) -> list[str]:
        fs, inner = storage.resolve(self.root)
        try:
            infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
        except FileNotFoundError:
            return []
        names = []
        for info in infos:
            name = info.base_name.removesuffix(".json")
            # The pattern also leaves out the writer's temporary files.
            is_state = info.type == pafs.FileType.File and info.base_name.endswith(".json")
            if is_state and re.fullmatch(NAME_PATTERN, name):
                names.append(name)
        return sorted(names)

    def load_all(self) -> dict[str, ScheduleState]:
        states = {}
        for name in self.names():
            state = self.load(name)
            if state is not None:
                states[name] = state
        return states
