"""The front ends over the engine: the ``side-audit`` command (``cli``) and the entry point that
torchrun starts on every process of a multi-process audit (``launch``).

They stand above :mod:`side_engine` and :mod:`side_gui` and are imported by neither: the engine
knows nothing of how it is started, and the CLI opens the app only when asked to.
"""
