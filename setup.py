"""Package discovery, the one build setting pyproject.toml cannot say.

Every package under ``side_engine/`` and ``side_gui/`` is found, so a new subpackage ships
without anyone listing it (``side_engine.stages`` was once left out of a hand-written list and
an installed copy could not run an audit). ``resources/`` is mapped to ``side_resources`` in
pyproject.toml; setuptools' ``packages.find`` does not discover a mapped folder, so it is named
here. Everything else about the build lives in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["side_audit", "side_audit.*", "side_engine", "side_engine.*", "side_gui", "side_gui.*"]), "side_resources"])
