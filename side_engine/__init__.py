"""SIDE Audit engine: extract memorised training images from unconditional diffusion models.

Qt-free by design: the CLI, the tests and the desktop app all drive the same
stages through :mod:`side_engine.audit`.
"""

import os

__version__ = "0.1.0"

# Offline by construction: nothing the engine loads may come from a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
