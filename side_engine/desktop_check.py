"""Can the desktop app start here? Asked before Qt is, because Qt answers a missing display
or a missing system library by aborting the process with a message about "platform plugins"
that names neither the library nor the package that provides it.

No Qt import (the engine never imports Qt): the plugin Qt would load is found in PySide6's
folder and its shared-library dependencies are listed with ``ldd``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# shared library -> the Debian/Ubuntu package that ships it (the ones Qt's xcb and wayland
# plugins need that slim and server installs leave out)
DEBIAN_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0", "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1", "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-xinput.so.0": "libxcb-xinput0", "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0", "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0", "libGLX.so.0": "libglx0", "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6", "libdbus-1.so.3": "libdbus-1-3", "libglib-2.0.so.0": "libglib2.0-0",
    "libSM.so.6": "libsm6", "libICE.so.6": "libice6", "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0", "libwayland-egl.so.1": "libwayland-egl1",
}
# everything the xcb plugin needs on a typical desktop; the README lists the same
XCB_PACKAGES = ["libxcb-cursor0", "libxcb-icccm4", "libxcb-image0", "libxcb-keysyms1", "libxcb-randr0",
                "libxcb-render-util0", "libxcb-shape0", "libxcb-xinerama0", "libxcb-xkb1", "libxkbcommon-x11-0",
                "libegl1", "libgl1", "libfontconfig1", "libdbus-1-3"]
HEADLESS_PLATFORMS = {"offscreen", "minimal", "vnc", "linuxfb", "eglfs", "minimalegl", "vkkhrdisplay"}


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def qt_platform() -> str:
    """The platform plugin Qt will try first: the one asked for, else wayland in a wayland
    session, else xcb (X11)."""
    asked = os.environ.get("QT_QPA_PLATFORM", "")
    if asked:
        return re.split(r"[;:]", asked)[0].strip()
    if os.environ.get("WAYLAND_DISPLAY") and os.environ.get("XDG_SESSION_TYPE") == "wayland":
        return "wayland"
    return "xcb"


def platform_plugin(name: str) -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for plugins in (Path(base) / "Qt" / "plugins", Path(base) / "plugins"):
            lib = plugins / "platforms" / f"libq{name}.so"
            if lib.exists():
                return lib
    return None


def missing_libraries(lib: Path) -> list[str]:
    """Shared libraries ``lib`` needs that the dynamic loader cannot find (``ldd``; empty where
    there is no ``ldd``)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    try:
        out = subprocess.run([ldd, str(lib)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    missing = [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]
    return list(dict.fromkeys(missing))


def install_hint(libraries: list[str]) -> str:
    packages = [DEBIAN_PACKAGES[lib] for lib in libraries if lib in DEBIAN_PACKAGES]
    unknown = [lib for lib in libraries if lib not in DEBIAN_PACKAGES]
    hint = f"sudo apt-get install {' '.join(packages)}" if packages else ""
    if unknown:
        hint += ("; " if hint else "") + f"and the packages that provide {', '.join(unknown)}"
    return hint


def gui_problem() -> str | None:
    """Why the desktop app cannot start here, with what to do; ``None`` when it can (as far as
    can be told without starting Qt)."""
    if sys.platform != "linux":
        return None
    if importlib.util.find_spec("PySide6") is None:
        return "the desktop app needs PySide6 (pip install PySide6)"
    platform = qt_platform()
    if platform in HEADLESS_PLATFORMS:
        return None
    if not has_display():
        return ("no display: neither DISPLAY nor WAYLAND_DISPLAY is set. Run the app in a desktop session "
                "(or with ssh -X), or stay in the terminal: side-audit demo --no-gui, side-audit run, "
                "side-audit report; --screenshot works without a display")
    plugin = platform_plugin(platform)
    if plugin is None:
        return None  # a platform PySide6 does not ship as a file here; let Qt decide
    missing = missing_libraries(plugin)
    if not missing:
        return None
    return (f"Qt's {platform} platform plugin needs system libraries this machine lacks: {', '.join(missing)}.\n"
            f"  On Debian/Ubuntu: {install_hint(missing)}\n"
            "  The terminal commands (side-audit demo --no-gui, run, metrics, report) work without them.")
