"""Where the shipped data lies, wherever the package is installed.

The data is the package ``side_resources`` (the repository's ``resources/`` folder, mapped in
``pyproject.toml``), found with ``importlib.resources``: in a checkout, an installed wheel and
a PyInstaller bundle alike. Callers need real folders (diffusers loads a model from a
directory, Jinja2 from a search path), so a package that is not unpacked on disk, such as a
zipped install, is refused with the reason rather than extracted behind the user's back.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ConfigError

PACKAGE = "side_resources"


def root() -> Path:
    try:
        base = resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise ConfigError(f"the package data ({PACKAGE}) is not installed; reinstall side-audit "
                          "(pip install side-audit, or pip install -e . in a checkout)") from None
    path = Path(str(base))
    if not isinstance(base, Path) and not path.is_dir():
        raise ConfigError(f"the package data ({PACKAGE}) is not unpacked on disk ({base}); install "
                          "side-audit from a wheel or a checkout, not a zip")
    return path


def path(*parts: str) -> Path:
    """A file or folder of the shipped data, e.g. ``path("demo", "model")``."""
    return root().joinpath(*parts)
