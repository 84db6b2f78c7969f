"""Data the product ships: the demo and paper-regime face models with their training faces,
the report template and the icon.

The folder is the top-level ``resources/`` of the source tree; ``pyproject.toml`` maps it to
the importable package ``side_resources`` so that a wheel, an editable install and a
PyInstaller bundle all carry it. Read it through ``side_engine.resources``, never by a path
relative to a module file (that path does not exist once the package is installed).
"""
