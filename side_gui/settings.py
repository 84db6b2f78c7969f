"""App settings in the user's config dir: recent workspaces and per-audit filters.

A typed model that ignores unknown keys, so an older or newer settings file
never stops the app from starting.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


def settings_path() -> Path:
    override = os.environ.get("SIDE_AUDIT_SETTINGS")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("side-audit")) / "settings.json"


@dataclass
class AppSettings:
    recent: list[str] = field(default_factory=list)
    filters: dict[str, dict] = field(default_factory=dict)  # workspace -> gallery filter
    current: str = ""

    @classmethod
    def load(cls) -> AppSettings:
        try:
            data = json.loads(settings_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}) if isinstance(data, dict) else cls()

    def save(self) -> None:
        path = settings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        except OSError:
            pass  # settings are a convenience; never fail the app on them

    def add_recent(self, workspace: str) -> None:
        workspace = str(Path(workspace).resolve())
        self.recent = [workspace] + [w for w in self.recent if w != workspace][:19]
        self.current = workspace
