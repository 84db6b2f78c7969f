"""Import the training images: decoded once, converted to the model's size and mode, hashed, cached."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import storage
from ..config import AuditConfig
from ..training_set import import_training_set

if TYPE_CHECKING:
    from ..audit import AuditRunner

NAMES = ("import",)
SPLIT = "rank0"


def run(audit: AuditRunner, cfg: AuditConfig) -> None:
    cache = audit.ws.cache_dir / "train_pixels.npy"
    if audit._done("import") and cache.exists():
        audit.train_pixels = np.load(cache, mmap_mode="r")
        return
    with audit._stage("import"):
        root = Path(cfg.train_data).expanduser()
        imported = import_training_set(
            root, audit.target.image_size, audit.target.image_channels, cfg.labels_csv or None,
            on_progress=lambda d, t: (audit._update("import", d, t), audit.progress.check()))
        for path, why in imported.unreadable:
            audit.progress.log(f"unreadable training image skipped: {root / path} ({why})")
        if imported.unreadable:
            audit.progress.log(f"{len(imported.unreadable)} unreadable file(s) skipped, "
                              f"{len(imported.paths)} imported")
        if imported.converted:
            mode = "grey" if audit.target.image_channels == 1 else "RGB"
            audit.progress.log(f"{imported.converted} training image(s) converted to {mode} "
                              f"to match the model's {audit.target.image_channels} channel(s)")
        dup = len(imported.hashes) - len(set(imported.hashes))
        if dup:
            audit.progress.log(f"{dup} training image(s) are exact duplicates of another; kept (each is "
                              "a separate training index)")
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, imported.pixels)
        tmp.replace(cache)
        with audit.db.atomic():
            audit.db["train_images"].delete_where()
            audit.db["train_images"].insert_all(
                {"idx": i, "path": p, "sha256": h, "label": lab, "surrogate": None}
                for i, (p, h, lab) in enumerate(zip(imported.paths, imported.hashes, imported.labels)))
            storage.set_kv(audit.db, "train_fingerprint", imported.fingerprint)
            storage.set_kv(audit.db, "train_files_fingerprint", imported.files_fingerprint)
            storage.set_kv(audit.db, "unreadable", imported.unreadable)
            storage.set_kv(audit.db, "converted", imported.converted)
        audit.train_pixels = imported.pixels
