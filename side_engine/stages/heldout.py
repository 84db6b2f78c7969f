"""How sure a band is: held-out images of the same kind, scored as generated images are.

A band says "this generated image is a close copy of a training image". How often would an
image the model never trained on land there anyway? The user's held-out split (images of the
same kind that are *not* in the training set: ``heldout_data``) answers it: each is prepared
as the training images were (size, channels, ``resize_filter``), embedded by the audit's
scorer and searched against the training set through the same index, and its best match put
in a band by the same rule. A band's share of held-out images is its false-alarm rate; the
metrics stage sets each band's audit rates beside it (``results.calibration``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .. import measures
from ..errors import InputError
from ..statistics import clopper_pearson
from ..training_set import list_images, to_model_pixels

if TYPE_CHECKING:
    from .context import StageContext

NAMES = ("heldout",)
SPLIT = "rank0"
BATCH = 64


def run(ctx: StageContext) -> None:
    """Produces the stored ``heldout`` record: per band, how many held-out images landed in it."""
    if ctx.store.is_done("heldout"):
        return
    with ctx.store.timed("heldout"):
        folder = Path(ctx.cfg.heldout_data).expanduser()
        files = list_heldout(folder)
        train_files = ctx.store.training_sha256()
        train_pixels = {_digest(np.asarray(ctx.artifacts.train_pixels[i:i + 1])[0])
                        for i in range(len(ctx.artifacts.train_pixels))}
        size, channels = ctx.target.image_size, ctx.target.image_channels
        kept, pixels, unreadable, members = [], [], [], []
        for i, p in enumerate(files):
            rel = p.relative_to(folder).as_posix()
            try:
                data = p.read_bytes()
                with Image.open(p) as img:
                    img.load()
                    arr, _ = to_model_pixels(img, size, channels, ctx.cfg.resize_filter)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                unreadable.append(f"{rel}: {e or type(e).__name__}")
                continue
            # a training image in the held-out folder is no non-member: left out, and said so
            if hashlib.sha256(data).hexdigest() in train_files or _digest(arr) in train_pixels:
                members.append(rel)
                continue
            kept.append(rel)
            pixels.append(arr)
            if i % 16 == 15:
                ctx.report.update("heldout", i + 1, len(files))
                ctx.report.check()
        if not pixels:
            raise InputError(f"setting 'heldout_data' = {folder}: none of its {len(files)} image files is a "
                             f"readable image outside the training set ({len(members)} are training images, "
                             f"{len(unreadable)} unreadable)")
        art = ctx.artifacts
        best, nearest = [], []
        for i in range(0, len(pixels), BATCH):
            scores = art.index.score(art.scorer.embed(np.stack(pixels[i:i + BATCH])))
            best += [float(v) for v in scores.best]
            nearest += [int(v) for v in scores.nearest]
        record = summarise(np.asarray(best), ctx.bands, art.scorer.higher_is_closer)
        record.update({"folder": str(folder), "unreadable": unreadable[:20], "n_unreadable": len(unreadable),
                       "training_images_left_out": members[:20], "n_training_images_left_out": len(members),
                       "images": [{"path": p, "best": b, "nearest": j} for p, b, j in zip(kept, best, nearest)]})
        ctx.store.put("heldout", record)
        ctx.report.update("heldout", len(files), len(files))
        if members:
            ctx.report.warn(f"{len(members)} image(s) of the held-out folder {folder} are training images (the "
                            "same file or the same pixels): left out of the false-alarm rates. A held-out split "
                            "must not overlap the training set.")
        if unreadable:
            ctx.report.log(f"held-out images: {len(unreadable)} unreadable, skipped ({unreadable[0]}, ...)")
        rates = ", ".join(f"{r['band']} {100 * r['rate']:.1f} %" for r in record["bands"] if not r["cumulative"])
        ctx.report.log(f"held-out images: {record['n']} scored against the training set; in each band: {rates}")


def summarise(best: np.ndarray, bands, higher_is_closer: bool) -> dict:
    """Per band (exact and at least as close): how many held-out images landed there, the rate
    and its exact (Clopper–Pearson) 95 % interval — the band's false-alarm rate."""
    n = len(best)
    rows = []
    for b in bands:
        for cumulative in (False, True):
            hit = measures.at_least(best, b, higher_is_closer) if cumulative else measures.in_band(
                best, b, bands, higher_is_closer)
            k = int(np.count_nonzero(hit))
            lo, hi = clopper_pearson(k, n)
            rows.append({"band": b.name, "cumulative": cumulative, "count": k, "rate": k / n if n else None,
                         "lo": lo, "hi": hi})
    return {"n": n, "bands": rows}


def list_heldout(folder: Path) -> list[Path]:
    return list_images(folder, what="setting 'heldout_data' =")


def _digest(pixels: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=16).digest()
