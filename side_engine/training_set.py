"""Import the reference (training) set exactly as the model saw it.

Images are found recursively, resized on the shorter side and centre-cropped
to the model's ``sample_size``, converted to its channel count and kept as
uint8 in one array; every unreadable file is reported by path.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import InputError
from .image_rows import NpyFile, to_model_tensor_range  # noqa: F401 (the model's range, read here by callers)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
# the setting resize_filter: a model trained on bilinear resizes looks less like bicubic
# references (on two 32 px face models a fifth to a third of the Gu-memorised copies vanished)
FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS,
           "nearest": Image.NEAREST, "box": Image.BOX}
MAX_PIXELS = 16_000 * 16_000  # larger files are refused, not decompressed


@dataclass
class ImportedSet:
    pixels: np.ndarray  # (N, H, W, C) uint8 (an ``image_rows.NpyFile`` when imported ``into`` a file)
    paths: list[str]  # relative to the root, POSIX style
    hashes: list[str]
    labels: list[str | None]
    fingerprint: str
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    converted: int = 0  # images whose channel count was changed to the model's
    resized: int = 0  # images not already at the model's size (resize_filter brought them there)
    files_fingerprint: str = ""  # over every image file, readable or not (see files_fingerprint)


def list_images(root: Path, what: str = "training data") -> list[Path]:
    """Every image file under ``root``; ``what`` names the folder in the errors (a setting's)."""
    if not root.exists():
        raise InputError(f"{what} {root}: no such folder")
    if not root.is_dir():
        raise InputError(f"{what} {root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{what} {root}: no image files (png, jpg, webp, bmp) found")
    return files


def fingerprint(hashes: list[str]) -> str:
    """SHA-256 over the sorted file hashes: independent of names and order."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()


def to_model_pixels(img: Image.Image, size: int, channels: int,
                    resize_filter: str = "bicubic") -> tuple[np.ndarray, bool]:
    """Resize the shorter side to ``size`` with ``resize_filter``, centre-crop, convert channels;
    (HWC uint8, converted?)."""
    img = ImageOps.exif_transpose(img)
    native = "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
    target = "L" if channels == 1 else "RGB"
    converted = native != target
    img = img.convert(target)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (w, h) != (nw, nh):
        img = img.resize((nw, nh), FILTERS[resize_filter], reducing_gap=3.0 if min(w, h) > 4 * size else None)
    left, top = (nw - size) // 2, (nh - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, converted


def read_labels_csv(path: Path, root: Path) -> dict[str, str]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise InputError(f"labels {path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"labels {path}: not UTF-8 text") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    out: dict[str, str] = {}
    for i, row in enumerate(rows, start=1):
        if not row:
            continue
        if len(row) < 2:
            raise InputError(f"labels {path}: line {i} should be 'path,label'")
        rel = Path(row[0].strip())
        if rel.is_absolute():
            try:
                rel = rel.relative_to(root)
            except ValueError:
                raise InputError(f"labels {path}: line {i}: {rel} is outside {root}") from None
        out[rel.as_posix()] = row[1].strip()
    return out


def import_training_set(
    root: str | Path,
    size: int,
    channels: int,
    labels_csv: str | Path | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    resize_filter: str = "bicubic",
    into: Path | None = None,
) -> ImportedSet:
    """Decode, convert and hash every training image. ``into``: the pixels are written to that
    ``.npy`` as they are decoded and ``pixels`` reads them from disk (at the paper's 25 000
    images of 128 px a list of them and its stacked copy held 2.4 GB); else they stay in memory."""
    root = Path(root).expanduser()
    files = list_images(root)
    csv_labels = read_labels_csv(Path(labels_csv), root) if labels_csv else None
    pixels = _PixelSink(into, (size, size, channels))
    try:
        return _import(root, files, size, channels, csv_labels, on_progress, resize_filter, pixels)
    finally:
        pixels.close()


class _PixelSink:
    """Where imported pixels go: a list in memory, or a raw file that becomes a ``.npy``."""

    def __init__(self, into: Path | None, row_shape: tuple[int, ...]) -> None:
        self.into, self.row_shape, self.rows, self.count = into, row_shape, [], 0
        self.raw = open(into.with_suffix(".raw"), "wb") if into is not None else None  # noqa: SIM115

    def add(self, arr: np.ndarray) -> None:
        self.count += 1
        if self.raw is None:
            self.rows.append(arr)
        else:
            self.raw.write(np.ascontiguousarray(arr, np.uint8).tobytes())

    def finish(self):
        if self.raw is None:
            return np.stack(self.rows)
        self.raw.close()
        tmp = self.into.with_suffix(".tmp.npy")
        with open(tmp, "wb") as f, open(self.into.with_suffix(".raw"), "rb") as src:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (self.count, *self.row_shape)})
            while block := src.read(1 << 26):  # copied in chunks, never the whole set in memory
                f.write(block)
        tmp.replace(self.into)
        return NpyFile(self.into)

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.into.with_suffix(".raw").unlink(missing_ok=True)


def _import(root, files, size, channels, csv_labels, on_progress, resize_filter, pixels: _PixelSink) -> ImportedSet:
    paths, hashes, labels, unreadable, file_hashes = [], [], [], [], []
    converted = resized = 0
    for i, p in enumerate(files):
        rel = p.relative_to(root).as_posix()
        try:
            data = p.read_bytes()
            file_hashes.append(hashlib.sha256(data).hexdigest())
            if not data:
                raise OSError("empty file")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(p) as img:
                    if img.width * img.height > MAX_PIXELS:
                        raise OSError(f"{img.width}x{img.height} pixels is too large")
                    img.load()
                    resized += min(img.size) != size or img.width != img.height
                    arr, conv = to_model_pixels(img, size, channels, resize_filter)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as e:
            unreadable.append((rel, str(e) or type(e).__name__))
        else:
            converted += conv
            pixels.add(arr)
            paths.append(rel)
            hashes.append(file_hashes[-1])
            if csv_labels is not None:
                labels.append(csv_labels.get(rel))
            else:
                parent = Path(rel).parent.as_posix()
                labels.append(None if parent == "." else parent.split("/")[0])
        if on_progress and (i % 16 == 15 or i == len(files) - 1):
            on_progress(i + 1, len(files))
    if not paths:
        listed = "; ".join(f"{p}: {why}" for p, why in unreadable[:5])
        raise InputError(f"training data {root}: none of {len(files)} image files is readable ({listed})")
    return ImportedSet(
        pixels=pixels.finish(), paths=paths, hashes=hashes, labels=labels,
        fingerprint=fingerprint(hashes), unreadable=unreadable, converted=converted,
        files_fingerprint=fingerprint(file_hashes), resized=resized,
    )


def files_fingerprint(root: Path) -> str:
    """Fingerprint over every image file of the folder (readable or not): detects any change
    before a resume, without decoding anything."""
    return fingerprint([hashlib.sha256(p.read_bytes()).hexdigest() for p in list_images(root)])
