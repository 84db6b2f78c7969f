"""Import the training images: decoded once, converted to the model's size and mode, hashed, cached."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..image_rows import NpyFile
from ..training_set import import_training_set

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("import",)
SPLIT = "rank0"


def run(ctx: StageContext) -> None:
    """Produces ``artifacts.train_pixels``."""
    cfg = ctx.cfg
    cache = ctx.ws.cache_dir / "train_pixels.npy"
    if ctx.store.is_done("import") and cache.exists():
        ctx.artifacts.train_pixels = NpyFile(cache)
        return
    with ctx.store.timed("import"):
        root = Path(cfg.train_data).expanduser()
        imported = import_training_set(
            root, ctx.target.image_size, ctx.target.image_channels, cfg.labels_csv or None,
            on_progress=lambda d, t: (ctx.report.update("import", d, t), ctx.report.check()),
            resize_filter=cfg.resize_filter, into=cache)  # written as decoded, read back from disk a batch at a time
        for path, why in imported.unreadable:
            ctx.report.log(f"unreadable training image skipped: {root / path} ({why})")
        if imported.unreadable:
            ctx.report.log(f"{len(imported.unreadable)} unreadable file(s) skipped, {len(imported.paths)} imported")
        if imported.converted:
            mode = "grey" if ctx.target.image_channels == 1 else "RGB"
            ctx.report.log(f"{imported.converted} training image(s) converted to {mode} "
                           f"to match the model's {ctx.target.image_channels} channel(s)")
        if imported.resized:
            ctx.report.warn(f"{imported.resized} of {len(imported.paths)} training images are not at the model's "
                            f"{ctx.target.image_size} x {ctx.target.image_size} and were resized ({cfg.resize_filter} "
                            "filter, setting resize_filter): references must look as the model's training pipeline "
                            "prepared them — another filter than that pipeline's hides near-identical copies.")
            ctx.store.put("resized", imported.resized)
        dup = len(imported.hashes) - len(set(imported.hashes))
        if dup:
            ctx.report.log(f"{dup} training image(s) are exact duplicates of another; kept (each is "
                           "a separate training index)")
        ctx.store.replace_training_images(
            [{"idx": i, "path": p, "sha256": h, "label": lab}
             for i, (p, h, lab) in enumerate(zip(imported.paths, imported.hashes, imported.labels))],
            {"train_fingerprint": imported.fingerprint, "train_files_fingerprint": imported.files_fingerprint,
             "unreadable": imported.unreadable, "converted": imported.converted})
        ctx.artifacts.train_pixels = imported.pixels
