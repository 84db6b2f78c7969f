"""The audit's stages, one module each, in run order: import (``training_data``) → ``embedding``
→ ``surrogate_labels`` → ``classifier`` (TI) → ``synthetic`` → ``tdkd`` (TD) → ``sampling``
(with streamed scoring) → ``metrics``. ``base`` holds what they share and the ``Stage``
protocol; ``AuditRunner`` (side_engine.audit) is the context they run in."""
