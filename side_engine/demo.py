"""``side-audit demo``: audit the bundled face model against its bundled training faces.

Everything ships with the package (``resources/demo``, read through
``side_engine.resources``): a small DDPM trained to partly memorise 24 LFW faces,
and those faces. Settings are sized so the whole audit runs in minutes on two CPU
cores; they are written to the workspace's ``audit.toml`` like any other audit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import resources
from .errors import ConfigError

RESOURCES = resources.root()
DEMO_MODEL = RESOURCES / "demo" / "model"
DEMO_FACES = RESOURCES / "demo" / "faces"

# Sized for two CPU cores. The model copies some of its 24 faces and not others (the case SIDE
# is for). The method is the product's default (labels from tight clusters of the model's own
# samples, λ 10 and 20), on half the default synthetic set (512 images, about 21 a cluster) so
# that the demo stays within 10 minutes; its TD classifier gets 50 epochs (with 30 a TD
# classifier of this size barely steered), and it samples N_G = 512 per λ: fewer widen the
# distinct-image ratio's interval further (at 512 it is about ±30 %, too wide to show this
# model's gain in a single run), more break the 10-minute budget. The sampler is the product's
# default, DDIM 50: at DDIM 25 the model's own sampler already reaches 19 of its 24 faces in 256
# samples, leaving guidance nothing to find. The evidence: bench/results/replication.md.
DEMO_SETTINGS = dict(
    label_source="synthetic-clusters", n_syn=512, tdkd_epochs=50, tdkd_lr=1e-3, lambdas=[0, 10, 20],
    n_per_lambda=512, batch_size=64, device="auto",
)
# quick: a smoke run of the demo's stages, each cut to a token size
QUICK_SETTINGS = dict(DEMO_SETTINGS, n_syn=32, tdkd_epochs=1, lambdas=[0, 3], n_per_lambda=8, steps=10,
                      batch_size=16)


def default_workspace(quick: bool) -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("side-audit")) / ("demo-quick" if quick else "demo")


def ensure_demo_workspace(root: Path | None = None, quick: bool = False, fresh: bool = False) -> tuple[Path, bool]:
    """The demo's workspace, created with the demo settings if it does not exist yet (the CLI's
    ``demo`` and the app's *Open the demo audit* share it). Returns (folder, created)."""
    from .audit import init_workspace
    from .workspace import Workspace

    if not (DEMO_MODEL / "model_index.json").exists() or not DEMO_FACES.is_dir():
        raise ConfigError(f"the demo model is missing from {RESOURCES / 'demo'}; reinstall side-audit "
                          "(in a checkout: pip install -e ., or train it with scripts/train_demo_model.py)")
    root = Path(root).expanduser() if root else default_workspace(quick)
    if fresh and root.exists():
        shutil.rmtree(root)
    ws = Workspace(root)
    if ws.exists():
        return ws.root, False
    init_workspace(root, str(DEMO_MODEL), str(DEMO_FACES), **(QUICK_SETTINGS if quick else DEMO_SETTINGS))
    return ws.root, True
