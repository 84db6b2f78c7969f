"""The package as a user installs it: a wheel built from this tree, installed into a fresh
virtual environment and run from a folder outside the checkout, must carry its data (demo
model, faces, template, icon) and run the demo and every report format."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy of what the build reads, so a stale build/ folder in the checkout (setuptools
    # reuses it) cannot smuggle in files that the package settings would no longer include
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("side_engine", "side_gui", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # no build isolation: the build backend (setuptools) is already installed, nothing is fetched
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(src)], check=True, cwd=out)
    (path,) = out.glob("side_audit-*.whl")
    return path


def test_wheel_carries_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"side_resources/{p.relative_to(ROOT / 'resources').as_posix()}"
               for p in (ROOT / "resources").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped - names == set()
    assert "side_resources/demo/model/unet/diffusion_pytorch_model.safetensors" in names
    assert "side_resources/templates/report.html.j2" in names
    assert not any(n.startswith(("tests/", "bench/", "resources/")) for n in names)


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_and_all_reports_outside_the_checkout(wheel, tmp_path):
    # the venv sees the already-installed dependencies (torch etc.) but gets its own copy of
    # side-audit from the wheel, which comes first on its path
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(QT_QPA_PLATFORM="offscreen", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    away = tmp_path / "elsewhere"
    away.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=away, env=env, capture_output=True, text=True, timeout=400)

    where = run(str(py), "-c", "import side_engine, side_resources; print(side_engine.__file__); "
                               "print(side_resources.__file__)")
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), where.stdout
    side = str(venv / "bin" / "side-audit")
    assert run(side, "--version").stdout.startswith("side-audit ")

    ws = tmp_path / "demo-ws"
    demo = run(side, "demo", "--quick", "--no-gui", "--workspace", str(ws))
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "Memorisation" in demo.stdout
    for fmt, suffix in (("html", ".html"), ("csv", ".zip"), ("pdf", ".pdf")):
        out = tmp_path / f"report{suffix}"
        rep = run(side, "report", str(ws), "--format", fmt, "--out", str(out))
        assert rep.returncode == 0, rep.stderr[-2000:]
        assert out.stat().st_size > 1000
    assert "SIDE" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    metrics = run(side, "metrics", str(ws), "--json")
    assert {r["method"] for r in json.loads(metrics.stdout)["rows"]} == {"random", "side"}
