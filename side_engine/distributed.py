"""One audit on several processes: ``torchrun ... -m side_engine.distributed WORKSPACE``.

PyTorch's own launcher starts the processes; they join one ``torch.distributed`` group (NCCL
on GPUs, gloo on CPUs). Rank 0 runs the audit as a single process would and alone owns the
workspace and its database; the other ranks need no shared file system. When the sampling
stage starts, rank 0 broadcasts what computing a batch needs — settings, the target model's
weights and scheduler, the guiding classifiers, the training-set vectors of the scorer's
index — and then hands out batches round by round, by sample index: every image is the one a
single process would make (its seed is fixed by the audit seed and its index). Each rank sends
its batch back; rank 0 stores one batch per transaction, as always, so a stopped or failed
job keeps every stored batch and a resume (with any number of processes) completes it. The
other stages are small next to sampling and run on rank 0 while the others wait.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist

from . import cpu
from .stages.sampling import SamplingContext, compute_batch, make_sampler

STOP, CONTEXT, ROUND = "stop", "context", "round"


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _send(message: dict) -> dict:
    """Rank 0 broadcasts ``message``; every other rank receives it."""
    box = [message if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_sampling_context(audit, cfg) -> None:
    """Rank 0: what a worker needs to compute batches, with no access to the workspace."""
    target = audit.target
    classifiers = {}
    for name in ("td", "ti"):
        model = getattr(audit, name, None)
        if model is not None:
            classifiers[name] = (model.hparams, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    sscd = None
    if audit.scorer_name == "sscd" and cfg.sscd_model:
        with open(cfg.sscd_model, "rb") as f:
            sscd = f.read()
    _send({"op": CONTEXT, "cfg": cfg.to_dict(), "k": audit.k, "batch": audit.batch,
           "unet_config": dict(target.unet.config), "scheduler_config": dict(target.scheduler.config),
           "unet_state": {k: v.detach().cpu() for k, v in target.unet.state_dict().items()},
           "classifiers": classifiers, "scorer": audit.scorer_name, "sscd": sscd, "bands": audit.bands,
           "vectors": audit.train_vectors, "groups": audit.index.groups})


def sampling_round(batches: list[list], compute) -> list:
    """Rank 0: batch i goes to rank i (an empty batch to a rank with nothing to do); returns
    every rank's result in rank order, so storing keeps the single-process order."""
    _send({"op": ROUND, "batches": batches})
    mine = compute(batches[0]) if batches[0] else None
    gathered = [None] * world_size()
    dist.gather_object(mine, gathered, dst=0)
    return gathered


class WorkerContext(SamplingContext):
    """A rank other than 0: the ``SamplingContext`` rebuilt from rank 0's broadcast."""

    def __init__(self, message: dict, device: torch.device) -> None:
        import tempfile

        from diffusers import DDPMScheduler, UNet2DModel

        from .classifiers import ResNetClassifier
        from .config import AuditConfig
        from .neighbours import TrainIndex
        from .scorers import make_scorer

        self.cfg = AuditConfig(**message["cfg"])
        self.device, self.k, self.batch = device, message["k"], message["batch"]
        unet = UNet2DModel.from_config(message["unet_config"])
        unet.load_state_dict(message["unet_state"])
        unet = unet.to(device).eval().requires_grad_(False)
        scheduler = DDPMScheduler.from_config(message["scheduler_config"])
        size = unet.config.sample_size
        size = int(size[0] if isinstance(size, list | tuple) else size)
        self.target = SimpleNamespace(unet=unet, scheduler=scheduler, channels=int(unet.config.in_channels),
                                      sample_size=size)
        self.td = self.ti = None
        for name, (hparams, state) in message["classifiers"].items():
            model = ResNetClassifier(**hparams)
            model.load_state_dict(state)
            setattr(self, name, model.to(device).eval().requires_grad_(False))
        sscd_path = ""
        if message["sscd"]:
            with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as f:
                f.write(message["sscd"])
            sscd_path = f.name
        self.scorer = make_scorer(message["scorer"], sscd_path, "cpu", cpu.usable_cores())
        self.index = TrainIndex(self.scorer, message["vectors"], message["bands"], message["groups"])
        self._guiding_cache: dict = {}
        self.sampler = make_sampler(self.target, self.cfg, device, compile=False)
        self.shape = (self.target.channels, size, size)


def worker_loop(device: torch.device) -> None:
    """Ranks other than 0: receive, compute, send back, until rank 0 says stop."""
    ctx = None
    while True:
        message = _send({})
        if message["op"] == STOP:
            return
        if message["op"] == CONTEXT:
            ctx = WorkerContext(message, device)
        elif message["op"] == ROUND:
            mine = message["batches"][dist.get_rank()]
            result = compute_batch(ctx, ctx.cfg, ctx.sampler, mine, ctx.shape, ctx.k) if mine else None
            dist.gather_object(result, None, dst=0)


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m side_engine.distributed",
                                     description="one SIDE audit on every process torchrun starts")
    parser.add_argument("workspace")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cpu.prefer_passive_waits()
    device = _device()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    torch.set_num_threads(cpu.usable_cores())
    try:
        if dist.get_rank() == 0:
            from .cli import main as cli_main

            try:
                return cli_main(["run", args.workspace] + (["--quiet"] if args.quiet else []))
            finally:
                _send({"op": STOP})  # however the run ended, the other ranks stop too
        worker_loop(device)
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
