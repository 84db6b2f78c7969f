"""SIDE Audit engine: extract memorised training images from unconditional diffusion models.

Qt-free by design: the CLI, the tests and the desktop app all drive the same
stages through :mod:`side_engine.audit`.
"""

__version__ = "0.1.0"
