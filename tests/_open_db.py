"""A child process's open of a workspace database, at a given moment (imports no torch: quick to spawn)."""

from __future__ import annotations

import time
from pathlib import Path


def open_at(path: str, start: float) -> str:
    from side_engine import storage

    while time.time() < start:
        pass
    try:
        storage.connect(Path(path)).close()
        return "ok"
    except Exception as e:  # noqa: BLE001 - reported to the test
        return str(e)
