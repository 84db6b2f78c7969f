"""The package as a user installs it: a wheel built from a clean export of this tree, installed
where the checkout cannot be reached, must carry every module and its data (demo model, faces,
template, icon) and run the demo, every report format and the app's views.

The installed copy sees the third-party packages of this interpreter through a plain path line
(the dependencies may come from anywhere) but not the project: a path line does not run the
``.pth`` files of that folder, so the editable finder a ``pip install -e .`` leaves there is
never installed, and the commands run from a folder outside the checkout. A wheel that lacks a
package then fails here as it fails for a user (``side_engine.stages`` once did, unseen).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "side_audit", "side_engine", "side_gui", "resources")
CODE = ("side_audit", "side_engine", "side_gui")


def exported_files() -> list[str]:
    """The files a clean export of the tree holds: what git tracks (and would track: new files not
    yet added, never ignored ones such as build/ or __pycache__/)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *BUILD_INPUTS],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked sdist)
        return [p.relative_to(ROOT).as_posix() for name in BUILD_INPUTS for p in
                ([ROOT / name] if (ROOT / name).is_file() else (ROOT / name).rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts]
    return [name for name in out if name and (ROOT / name).is_file()]


def source_modules() -> set[str]:
    """Every Python file of the engine and the app, as its path in a wheel."""
    return {name for name in exported_files() if name.startswith(tuple(f"{c}/" for c in CODE))
            and name.endswith((".py", "py.typed"))}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from an export of what the build reads, so a stale build/ folder or an untracked file
    # in the checkout cannot smuggle in what the package settings would not include
    src = out / "src"
    for name in exported_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    # no build isolation: the build backend (setuptools) is already installed, nothing is fetched
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(src)], check=True, cwd=out)
    (path,) = out.glob("side_audit-*.whl")
    return path


def test_a_venv_inside_the_checkout_does_not_count_as_the_checkout(tmp_path, monkeypatch):
    """The usual layout (``python -m venv .venv`` in the checkout): its site-packages lies inside
    the checkout and holds only the dependencies, so it may stay on the installed copy's path; a
    folder of the checkout with the project's code may not."""
    venv_site = ROOT / ".venv" / "lib" / "python3.11" / "site-packages"
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(venv_site)])
    monkeypatch.setattr(site, "getusersitepackages", lambda: str(tmp_path))
    monkeypatch.setattr(Path, "is_dir", lambda self: True)
    assert not reaches_the_checkout(str(venv_site))
    assert reaches_the_checkout(str(ROOT)) and reaches_the_checkout(str(ROOT / "bench"))
    assert not reaches_the_checkout(str(tmp_path)) and not reaches_the_checkout("")


def test_wheel_carries_every_module_and_package_of_the_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = source_modules()
    assert "side_engine/stages/__init__.py" in modules and "side_gui/widgets/__init__.py" in modules
    assert sorted(modules - names) == []
    packages = {str(Path(m).parent) for m in modules if m.endswith("__init__.py")}
    assert packages <= {str(Path(n).parent) for n in names if n.endswith("__init__.py")}


def test_wheel_carries_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"side_resources/{name.removeprefix('resources/')}" for name in exported_files()
               if name.startswith("resources/")}
    assert sorted(shipped - names) == []
    assert "side_resources/demo/model/unet/diffusion_pytorch_model.safetensors" in names
    assert "side_resources/templates/report.html.j2" in names
    assert not any(n.startswith(("tests/", "bench/", "resources/", "scripts/")) for n in names)


def dependency_folders() -> list[str]:
    """Where this interpreter's third-party packages are: anywhere, the checkout included (a
    ``.venv`` inside it is where most users keep one)."""
    return [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]


def reaches_the_checkout(entry: str) -> bool:
    """A ``sys.path`` entry through which the checkout's own code could be imported: the checkout
    or a folder of it, except a dependency folder that holds none of the project's packages."""
    if not entry or not Path(entry).resolve().is_relative_to(ROOT):
        return False
    dependency = Path(entry).resolve() in {Path(p).resolve() for p in dependency_folders()}
    project = any((Path(entry) / name).exists() for name in (*CODE, "side_resources", "tests"))
    return project or not dependency


def isolated_venv(where: Path, wheel: Path) -> Path:
    """A venv with the wheel installed and the dependencies reachable, the project not."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    own = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip())
    (own / "zz_dependencies.pth").write_text("".join(f"{p}\n" for p in dependency_folders()))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    return venv


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_reports_and_app_where_the_checkout_is_invisible(wheel, tmp_path):
    venv = isolated_venv(tmp_path, wheel)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # the app's settings (its list of recent audits) in the test's folder: the installed app
    # recorded every run's temporary workspace in the user's own list
    env.update(QT_QPA_PLATFORM="offscreen", PYTHONNOUSERSITE="1", SIDE_AUDIT_SETTINGS=str(tmp_path / "settings.json"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    away = tmp_path / "elsewhere"
    away.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=away, env=env, capture_output=True, text=True, timeout=400)

    # the project comes from the wheel alone: every package from the venv, no editable finder,
    # no path into the checkout (``tests`` is a package there and must not be importable)
    packages = sorted({str(Path(m).parent).replace("/", ".") for m in source_modules()
                       if m.endswith("__init__.py")} | {"side_resources"})
    probe = ("import importlib, importlib.util, json, sys; "
             f"mods = {{n: importlib.import_module(n).__file__ for n in {packages!r}}}; "
             "print(json.dumps({'mods': mods, 'path': sys.path, "
             "'tests': importlib.util.find_spec('tests') is not None, "
             "'finders': [type(f).__module__ for f in sys.meta_path]}))")
    seen = run(str(py), "-c", probe)
    assert seen.returncode == 0, seen.stderr
    seen = json.loads(seen.stdout)
    assert all(f.startswith(str(venv)) for f in seen["mods"].values()), seen["mods"]
    assert not seen["tests"]
    assert not any("editable" in f.lower() for f in seen["finders"]), seen["finders"]
    assert not [p for p in seen["path"] if reaches_the_checkout(p)], seen["path"]

    side = str(venv / "bin" / "side-audit")
    assert run(side, "--version").stdout.startswith("side-audit ")  # the console script itself
    # the CLI commands in one interpreter of the venv (each start-up imports torch: seconds),
    # through the function the console script calls, from the folder outside the checkout
    ws = tmp_path / "demo-ws"
    shots = tmp_path / "shots"
    commands = [["demo", "--quick", "--no-gui", "--workspace", str(ws)],
                *(["report", str(ws), "--format", fmt, "--out", str(tmp_path / f"report{suffix}")]
                  for fmt, suffix in (("html", ".html"), ("csv", ".zip"), ("pdf", ".pdf"))),
                ["metrics", str(ws), "--json"]]
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import contextlib, io, json\n"
        "from side_audit.cli import main\n"
        "out = []\n"
        f"for argv in {commands!r}:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            rc = main(argv)\n"
        "        except SystemExit as e:  # a command may end through sys.exit\n"
        "            rc = e.code or 0\n"
        "    out.append({'argv': argv, 'rc': rc, 'stdout': buf.getvalue()})\n"
        "    if rc:\n"
        "        break\n"
        "print(json.dumps(out))\n")
    done = run(str(py), str(driver))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["rc"] for r in results] == [0] * len(commands), (results[-1]["argv"], done.stderr[-2000:])
    assert "Memorisation" in results[0]["stdout"]
    for suffix in (".html", ".zip", ".pdf"):
        assert (tmp_path / f"report{suffix}").stat().st_size > 1000
    assert "SIDE" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    assert zipfile.ZipFile(tmp_path / "report.zip").namelist()
    assert {r["method"] for r in json.loads(results[4]["stdout"])["rows"]} == {"random", "side"}
    # the app in a process of its own, as a user starts it (the PDF report made a QGuiApplication
    # in the driver, and widgets need a QApplication)
    gui = run(side, "gui", str(ws), "--screenshot", str(shots))
    assert gui.returncode == 0, gui.stderr[-2000:]
    pngs = sorted(shots.glob("*.png"))
    assert len(pngs) >= 4 and all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 5000 for p in pngs)
    assert str(ws) in (tmp_path / "settings.json").read_text()  # the app's settings went where the test said
