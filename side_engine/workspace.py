"""The on-disk layout of one audit: settings, database and artefacts in one folder."""

from __future__ import annotations

from pathlib import Path

from . import config
from .errors import ConfigError, WorkspaceError


class Workspace:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def config_path(self) -> Path:
        return self.root / "audit.toml"

    @property
    def log_path(self) -> Path:
        """Every run's log, appended (CLI and app alike), so any front end can show it later."""
        return self.root / "run.log"

    @property
    def db_path(self) -> Path:
        return self.root / "audit.db"

    @property
    def classifiers_dir(self) -> Path:
        return self.root / "classifiers"

    def classifier_path(self, name: str) -> Path:
        """Where the classifier ``name`` ("ti", "td") is stored."""
        return self.classifiers_dir / f"{name}.safetensors"

    def classifier_hparams(self, name: str) -> dict | None:
        """What the stored classifier ``name`` ("ti", "td") was trained with, read from its
        safetensors header alone (no torch, no weights): the run's own width, which its settings
        stop saying once an automatic default changes between versions. None where none is stored."""
        import json

        try:
            with open(self.classifiers_dir / f"{name}.safetensors", "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n)) if 0 < n < 1 << 24 else {}
            return json.loads(header["__metadata__"]["hparams"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def synthetic_dir(self) -> Path:
        return self.root / "synthetic"

    @property
    def stop_path(self) -> Path:
        """A stop request for the running audit (``side-audit stop``, the app's Stop for a
        multi-process run): every process that checks for cancellation sees it."""
        return self.root / "STOP"

    def request_stop(self, by: str) -> None:
        """Ask the running audit (any of its processes) to stop after its batch; ``by`` says who
        asked. A folder that cannot take the file is a WorkspaceError naming it."""
        try:
            self.stop_path.write_text(f"stop requested by {by}\n", encoding="utf-8")
        except OSError as e:
            raise WorkspaceError(f"{self.stop_path}: cannot write the stop request ({e.strerror})") from None

    def exists(self) -> bool:
        return self.config_path.exists()

    def ensure_dirs(self) -> None:
        try:
            for d in (self.root, self.classifiers_dir, self.cache_dir, self.samples_dir, self.synthetic_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WorkspaceError(f"workspace {self.root}: cannot create folders ({e.strerror})") from None

    def load_config(self) -> config.AuditConfig:
        if not self.root.exists():
            raise ConfigError(f"workspace {self.root}: no such folder; create it with `side-audit init`")
        return config.load(self.config_path)

    def write_config(self, cfg: config.AuditConfig, overwrite: bool = False) -> None:
        if self.config_path.exists() and not overwrite:
            raise ConfigError(f"{self.config_path} already exists; use another folder or --force")
        self.ensure_dirs()
        try:
            self.config_path.write_text(config.dumps(cfg), encoding="utf-8")
        except OSError as e:
            raise WorkspaceError(f"{self.config_path}: cannot write ({e.strerror})") from None
