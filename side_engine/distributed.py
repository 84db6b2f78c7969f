"""One audit on several processes: ``torchrun ... -m side_engine.distributed WORKSPACE``.

PyTorch's own launcher starts the processes; they join one ``torch.distributed`` group (NCCL
on GPUs, gloo on CPUs). One process — the *owner*, the lowest rank that can see the workspace
folder — runs the audit as a single process would and alone owns the workspace and its
database; the other ranks need no shared file system. (torchrun's c10d rendezvous puts rank 0
on any node, not necessarily the one with the workspace; electing the owner by what each rank
can see makes that not matter.) The owner broadcasts what a stage's share of work needs —
settings, the target model (and a latent model's autoencoder) before the first parallel stage,
the TD classifier's start and the synthetic set before TDKD, the guiding classifiers and the
training-set vectors of the scorer's index before sampling — and then hands out work round by
round, by index: every image is the one a single process would make (its seed is fixed by the
audit seed and its index). Each rank sends its batch back; the owner stores it (samples: one
batch per transaction, on a writer thread; the synthetic set: one chunk file per batch), so a
stopped or failed job keeps every stored batch and a resume (with any number of processes)
completes it.

Three stages divide their work (their ``SPLIT``): the synthetic set and guided sampling by
index, TDKD training by data (DistributedDataParallel over shards of each batch, with batch
statistics taken over the whole batch, see ``classifier_training.global_batch_stats``). The
others are small and run on the owner while the rest wait for its next message.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from . import cpu
from .errors import Cancelled, ConfigError
from .stages.context import Artifacts, SamplingContext, StageContext
from .stages.sampling import compute_batch, make_sampler

STOP, MODEL, SAMPLING, ROUND, TDKD = "stop", "model", "sampling", "round", "tdkd"


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def one_machine() -> bool:
    """Every process of the group runs on this machine (torchrun: LOCAL_WORLD_SIZE = WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) == world_size()


def tdkd_data_parallel(device: torch.device) -> bool:
    """Whether TDKD trains over every rank (data-parallel): on GPUs, each rank with its own, and
    across machines. On one machine's CPU the owner trains alone on every core while the others
    wait: as fast, and the very network a single process trains (data-parallel float32 sums in
    another order, and training amplifies that into another classifier: bench/RESULTS.md §11).
    ``SIDE_TDKD_DATA_PARALLEL=1`` forces the data-parallel path (its tests)."""
    if world_size() == 1:
        return False
    return device.type != "cpu" or not one_machine() or os.environ.get("SIDE_TDKD_DATA_PARALLEL") == "1"


@contextlib.contextmanager
def owner_alone(device: torch.device, threads: int):
    """While the owner trains alone on one machine's CPU, the waiting ranks' cores are its own:
    the thread count a single process of this audit trains with (``threads``, or every core),
    so its classifier is the single-process one. Elsewhere nothing changes."""
    if world_size() == 1 or device.type != "cpu" or not one_machine():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads > 0 else cpu.machine_cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def trained_by(device: torch.device, processes: int = 1) -> str:
    """The layout a classifier was trained with, in words (the report names it: another layout
    trains a statistically equivalent, not an equal, network)."""
    if processes > 1:
        return f"data-parallel on {processes} processes ({device.type})"
    if device.type == "cpu":
        return f"one process, {torch.get_num_threads()} CPU threads"
    return f"one process on {device}"


_owner = 0  # the rank that owns the workspace (``elect_owner``)


def owner() -> int:
    return _owner


def elect_owner(workspace: str) -> int:
    """Every rank says whether it sees the workspace (its ``audit.toml``); the lowest that does
    owns the audit. None: every rank stops with an error that names the folder."""
    global _owner
    from socket import gethostname

    seen = [None] * dist.get_world_size()
    dist.all_gather_object(seen, (Path(workspace, "audit.toml").is_file(), gethostname()))
    owners = [r for r, (has, _) in enumerate(seen) if has]
    if not owners:
        hosts = ", ".join(sorted({h for _, h in seen}))
        raise SystemExit(f"{workspace}: no audit.toml there on any node ({hosts}); give the workspace path as "
                         "the node that holds it sees it (create it with `side-audit init` first)")
    _owner = owners[0]
    return _owner


def _send(message: dict) -> dict:
    """The owner broadcasts ``message``; every other rank receives it."""
    box = [message if dist.get_rank() == _owner else None]
    dist.broadcast_object_list(box, src=_owner)
    return box[0]


def _cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def share_model(ctx: StageContext) -> None:
    """The owner, once per run before the first parallel stage: settings and the target model."""
    if ctx.model_shared:
        return
    target = ctx.target
    vae = None
    if target.vae is not None:
        vae = (target.vae_kind, dict(target.vae.config), _cpu_state(target.vae), target.latent_scale)
    _send({"op": MODEL, "cfg": ctx.cfg.to_dict(), "compile": ctx.compiles(),
           "unet_config": dict(target.unet.config), "scheduler_config": dict(target.scheduler.config),
           "unet_state": _cpu_state(target.unet), "vae": vae, "weights": target.weights})
    ctx.model_shared = True


def share_sampling_context(ctx: StageContext) -> None:
    """The owner: what a worker needs besides the model to compute sampling batches, with no
    access to the workspace."""
    share_model(ctx)
    art = ctx.artifacts
    classifiers = {name: (model.hparams, _cpu_state(model)) for name, model in (("td", art.td), ("ti", art.ti))
                   if model is not None}
    sscd = None
    if ctx.scorer_name == "sscd" and ctx.cfg.sscd_model:
        with open(ctx.cfg.sscd_model, "rb") as f:
            sscd = f.read()
    _send({"op": SAMPLING, "k": art.k, "batch": ctx.batch, "classifiers": classifiers,
           "scorer": ctx.scorer_name, "sscd": sscd, "bands": ctx.bands,
           "vectors": art.train_vectors, "groups": art.index.groups,
           "guide": art.guide.to_dict() if art.guide is not None else None})


def run_round(kind: str, batches: list, compute: Callable) -> list:
    """The owner: batch i goes to rank i (an empty batch to a rank with nothing to do); returns
    every rank's result in rank order, so storing keeps the single-process order. ``kind``
    names the worker function (``WORK``)."""
    _send({"op": ROUND, "kind": kind, "batches": batches})
    mine = compute(batches[_owner]) if batches[_owner] else None
    gathered = [None] * world_size()
    dist.gather_object(mine, gathered, dst=_owner)
    return gathered


def share_tdkd(message: dict) -> None:
    """The owner: every rank trains the TD classifier together (``stages.tdkd``)."""
    _send({"op": TDKD, **message})


def agree_to_stop(cancelled: bool) -> bool:
    """Every rank learns whether the owner was asked to stop: a collective per training step, so
    every rank leaves the training loop at the same step instead of waiting in a reduction."""
    flag = torch.tensor([1 if cancelled and rank() == _owner else 0], dtype=torch.int32)
    dist.broadcast(flag, src=_owner)  # a CPU tensor: gloo, or the CPU half of "cpu:gloo,cuda:nccl"
    return bool(flag.item())


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
        self.sampler = make_sampler(self.target, self.cfg, device, compile=message["compile"])
        size = self.target.sample_size
        self.shape = (self.target.channels, size, size)

    def add_sampling(self, message: dict) -> None:
        import tempfile

        from .classifiers import ResNetClassifier
        from .neighbours import TrainIndex
        from .scorers import make_scorer

        art = self.artifacts
        from .guide_check import GuideCheck

        art.k, self.batch = message["k"], message["batch"]
        art.guide = GuideCheck.from_dict(message["guide"]) if message.get("guide") else None
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
    return compute_batch(ctx, ctx.cfg, ctx.sampler, batch, ctx.shape, ctx.artifacts.k)


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
        message = _send({})
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
            dist.gather_object(result, None, dst=_owner)


def run_device(workspace: str) -> torch.device:
    """Every rank computes on the device the audit's ``device`` setting names — the owner reads
    it and tells the others (who may not see the workspace): with ``cuda``, GPU ``LOCAL_RANK``."""
    from .config import load
    from .devices import resolve_device

    kind = ""
    if dist.get_rank() == _owner:
        try:
            kind = resolve_device(load(Path(workspace) / "audit.toml").device).type
        except Exception as e:  # the owner's CLI run reports it properly; here the others just stop
            kind = f"error: {e}"
    kind = _send({"device": kind})["device"]
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


def refuse_in_frozen_bundle(nproc: int) -> None:
    """A PyInstaller bundle cannot start ``python -m torch.distributed.run``: said before anything
    runs, by the CLI and the app alike."""
    if nproc > 1 and getattr(sys, "frozen", False):
        raise ConfigError(f"processes = {nproc}: this self-contained program runs one process; set processes = 1 "
                          "(audit.toml, the app's Settings or --nproc 1), or for several install the package "
                          "(pip install side-audit) and run side-audit from it")


STATUS_FILE_ENV = "SIDE_EXIT_STATUS_FILE"


def _hand_back(status: int) -> int:
    """The owner's exit status. Under ``side-audit run --nproc`` (which names a file in
    STATUS_FILE_ENV) an error the owner has already said, or a stop, goes back through that
    file and the process ends 0, so torchrun does not add its ChildFailedError traceback below
    the message (and the app, which shows the output's tail, shows the message). Started by
    hand, the status is the exit status, as schedulers expect."""
    path = os.environ.get(STATUS_FILE_ENV)
    if not status or not path:
        return status
    try:
        Path(path).write_text(str(status), encoding="utf-8")
    except OSError:
        return status
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m side_engine.distributed",
                                     description="one SIDE audit on every process torchrun starts")
    parser.add_argument("workspace")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    cpu.prefer_passive_waits()
    if torch.cuda.is_available():  # collectives of objects go through this GPU under NCCL
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    # GPU tensors over NCCL, CPU tensors (and CPU audits) over gloo; SIDE_DIST_BACKEND=gloo for
    # processes sharing one GPU (NCCL refuses two ranks on one device) or where NCCL cannot run
    default = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=os.environ.get("SIDE_DIST_BACKEND") or default)
    torch.set_num_threads(cpu.usable_cores())
    try:
        elect_owner(args.workspace)
        device = run_device(args.workspace)
        if dist.get_rank() == _owner:
            from .cli import main as cli_main

            try:
                status = cli_main(["run", args.workspace, "--nproc", "1"] + (["--quiet"] if args.quiet else []))
            finally:
                _send({"op": STOP})  # however the run ended, the other ranks stop too
            return _hand_back(status)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the owner's to act on: it says stop
        worker_loop(device)
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
