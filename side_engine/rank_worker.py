"""What every rank but the owner does in a multi-process audit: receive, compute, send back.

The owner's side of each message is ``side_engine.ranks``; a worker rebuilds the target model
(``MODEL``) and what sampling reads (``SAMPLING``) from the broadcasts, and computes the batches
of a round with the same functions a single process calls (``stages.sampling.compute_batch``,
``stages.synthetic.compute_chunk``, ``stages.tdkd.train_shared``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.distributed as dist

from . import cpu, ranks
from .errors import Cancelled
from .ranks import MODEL, ROUND, SAMPLING, STOP, TDKD, send
from .sampler import GuidancePlan, classes_drawn, make_sampler
from .stages.context import Artifacts, SamplingContext
from .stages.sampling import compute_batch


class WorkerContext(SamplingContext):
    """A rank other than the owner: the target model (``MODEL``) and then what sampling reads
    (``SAMPLING``), rebuilt from the owner's broadcasts."""

    def __init__(self, message: dict, device: torch.device) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel, VQModel

        from .checkpoint import TargetModel
        from .config import AuditConfig

        super().__init__()
        self.cfg = AuditConfig(**message["cfg"])
        self.device = device
        self.artifacts = Artifacts()
        unet = UNet2DModel.from_config(message["unet_config"])
        unet.load_state_dict(message["unet_state"])
        scheduler = DDPMScheduler.from_config(message["scheduler_config"])
        vae, kind, scale = None, "", 1.0
        if message["vae"] is not None:
            kind, config, state, scale = message["vae"]
            vae = (VQModel if kind == "VQModel" else AutoencoderKL).from_config(config)
            vae.load_state_dict(state)
            vae.eval().requires_grad_(False)
        self.target = TargetModel(unet.eval().requires_grad_(False), scheduler, Path("."), "", [],
                                  vae, kind, scale, message["weights"]).to(device)
        self.plan = GuidancePlan()
        self.sampler = make_sampler(self.target, self.cfg, device, compile=message["compile"])
        size = self.target.sample_size
        self.shape = (self.target.channels, size, size)

    def add_sampling(self, message: dict) -> None:
        import tempfile

        from .classifiers import ResNetClassifier
        from .neighbours import TrainIndex
        from .scorers import make_scorer

        art = self.artifacts
        art.k, self.batch = message["k"], message["batch"]
        self.plan, art.centroids = message["plan"], message["centroids"]
        for name, (hparams, state) in message["classifiers"].items():
            model = ResNetClassifier(**hparams)
            model.load_state_dict(state)
            setattr(art, name, model.to(self.device).eval().requires_grad_(False))
        sscd_path = ""
        if message["sscd"]:
            with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as f:
                f.write(message["sscd"])
            sscd_path = f.name
        art.scorer = make_scorer(message["scorer"], sscd_path, "cpu", cpu.usable_cores())
        art.index = TrainIndex(art.scorer, message["vectors"], message["bands"], message["groups"])


def _work_sample(ctx: WorkerContext, batch):
    return compute_batch(ctx, ctx.cfg, ctx.sampler, batch, ctx.shape, classes_drawn(ctx.artifacts.k), ctx.plan)


def _work_synthetic(ctx: WorkerContext, batch):
    from .stages.synthetic import compute_chunk

    return compute_chunk(ctx.cfg, ctx.sampler, batch, ctx.shape, ctx.target.latent)


WORK = {"sample": _work_sample, "synthetic": _work_synthetic}


def _train_tdkd(message: dict, device: torch.device) -> None:
    from .stages.tdkd import train_shared

    with contextlib.suppress(Cancelled):  # the owner stopped the run; its next message says so
        train_shared(message, device, progress=None)


def worker_loop(device: torch.device) -> None:
    """Every rank but the owner: receive, compute, send back, until the owner says stop."""
    ctx = None
    while True:
        message = send({})
        op = message["op"]
        if op == STOP:
            return
        if op == MODEL:
            ctx = WorkerContext(message, device)
        elif op == SAMPLING:
            ctx.add_sampling(message)
        elif op == TDKD:
            _train_tdkd(message, device)
        elif op == ROUND:
            mine = message["batches"][dist.get_rank()]
            result = WORK[message["kind"]](ctx, mine) if mine else None
            dist.gather_object(result, None, dst=ranks.owner())


def run_device(workspace: str) -> torch.device:
    """Every rank computes on the device the audit's ``device`` setting names — the owner reads
    it and tells the others (who may not see the workspace): with ``cuda``, GPU ``LOCAL_RANK``."""
    from .config import load
    from .devices import resolve_device

    kind = ""
    if dist.get_rank() == ranks.owner():
        try:
            kind = resolve_device(load(Path(workspace) / "audit.toml").device).type
        except Exception as e:  # the owner's CLI run reports it properly; here the others just stop
            kind = f"error: {e}"
    kind = send({"device": kind})["device"]
    if kind.startswith("error"):
        raise SystemExit(kind)
    if kind == "cuda":
        local, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= gpus and "nccl" in dist.get_backend():
            raise SystemExit(f"process {local} of this node has no GPU of its own ({gpus} GPUs): start at most "
                             "one process per GPU (--nproc / --nproc-per-node)")
        torch.cuda.set_device(local % gpus)  # over gloo (SIDE_DIST_BACKEND) processes may share a GPU
        return torch.device("cuda", local % gpus)
    return torch.device(kind)
