"""The rank protocol of a multi-process audit: who owns the workspace, and what the owner sends.

PyTorch's own launcher starts the processes (``side_audit.launch``); they join one
``torch.distributed`` group (NCCL on GPUs, gloo on CPUs). One process — the *owner*, the lowest
rank that can see the workspace folder — runs the audit as a single process would and alone owns
the workspace and its database; the other ranks need no shared file system. (torchrun's c10d
rendezvous puts rank 0 on any node, not necessarily the one with the workspace; electing the owner
by what each rank can see makes that not matter.) The owner broadcasts what a stage's share of
work needs — settings, the target model (and a latent model's autoencoder) before the first
parallel stage, the TD classifier's start and the synthetic set before TDKD, the guiding
classifiers and the training-set vectors of the scorer's index before sampling — and then hands
out work round by round, by index: every image is the one a single process would make (its seed
is fixed by the audit seed and its index). Each rank sends its batch back; the owner stores it,
so a stopped or failed job keeps every stored batch and a resume (with any number of processes)
completes it.

Three stages divide their work (their ``SPLIT``): the synthetic set and guided sampling by
index, TDKD training by data (DistributedDataParallel over shards of each batch, with batch
statistics taken over the whole batch, see ``classifier_training.global_batch_stats``). The
others are small and run on the owner while the rest wait for its next message. What the other
ranks do with these messages is ``side_engine.rank_worker``; this module imports no stage, so
that every stage may import it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from . import cpu
from .devices import compiles
from .errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .sampler import GuidancePlan
    from .stages.context import StageContext

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


def send(message: dict) -> dict:
    """The owner broadcasts ``message``; every other rank receives it."""
    box = [message if dist.get_rank() == _owner else None]
    dist.broadcast_object_list(box, src=_owner)
    return box[0]


def cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


_model_sent = False  # this process (the owner) has sent the target model to the others


def share_model(ctx: StageContext) -> None:
    """The owner, once per run before the first parallel stage: settings and the target model."""
    global _model_sent
    if _model_sent:
        return
    target = ctx.target
    vae = None
    if target.vae is not None:
        vae = (target.vae_kind, dict(target.vae.config), cpu_state(target.vae), target.latent_scale)
    send({"op": MODEL, "cfg": ctx.cfg.to_dict(), "compile": compiles(ctx.cfg, ctx.device),
          "unet_config": dict(target.unet.config), "scheduler_config": dict(target.scheduler.config),
          "unet_state": cpu_state(target.unet), "vae": vae, "weights": target.weights})
    _model_sent = True


def share_sampling_context(ctx: StageContext, plan: GuidancePlan) -> None:
    """The owner: what a worker needs besides the model to compute sampling batches, with no
    access to the workspace: the guiding classifiers, the scorer's index, the kept clusters'
    centroids (the cluster each image falls in, under synthetic-clusters) and the guidance plan."""
    share_model(ctx)
    art = ctx.artifacts
    classifiers = {name: (model.hparams, cpu_state(model)) for name, model in (("td", art.td), ("ti", art.ti))
                   if model is not None}
    sscd = None
    if ctx.scorer_name == "sscd" and ctx.cfg.sscd_model:
        with open(ctx.cfg.sscd_model, "rb") as f:
            sscd = f.read()
    send({"op": SAMPLING, "k": art.k, "batch": ctx.batch, "classifiers": classifiers,
          "scorer": ctx.scorer_name, "sscd": sscd, "bands": ctx.bands,
          "vectors": art.train_vectors, "groups": art.index.groups, "centroids": art.centroids,
          "plan": plan})


def run_round(kind: str, batches: list, compute: Callable) -> list:
    """The owner: batch i goes to rank i (an empty batch to a rank with nothing to do); returns
    every rank's result in rank order, so storing keeps the single-process order. ``kind``
    names the worker function (``WORK``)."""
    send({"op": ROUND, "kind": kind, "batches": batches})
    mine = compute(batches[_owner]) if batches[_owner] else None
    gathered = [None] * world_size()
    dist.gather_object(mine, gathered, dst=_owner)
    return gathered


def share_tdkd(message: dict) -> None:
    """The owner: every rank trains the TD classifier together (``stages.tdkd``)."""
    send({"op": TDKD, **message})


def agree_to_stop(cancelled: bool) -> bool:
    """Every rank learns whether the owner was asked to stop: a collective per training step, so
    every rank leaves the training loop at the same step instead of waiting in a reduction."""
    flag = torch.tensor([1 if cancelled and rank() == _owner else 0], dtype=torch.int32)
    dist.broadcast(flag, src=_owner)  # a CPU tensor: gloo, or the CPU half of "cpu:gloo,cuda:nccl"
    return bool(flag.item())



def refuse_in_frozen_bundle(nproc: int) -> None:
    """A PyInstaller bundle cannot start ``python -m torch.distributed.run``: said before anything
    runs, by the CLI and the app alike."""
    if nproc > 1 and getattr(sys, "frozen", False):
        raise ConfigError(f"processes = {nproc}: this self-contained program runs one process; set processes = 1 "
                          "(audit.toml, the app's Settings or --nproc 1), or for several install the package "
                          "(pip install side-audit) and run side-audit from it")


STATUS_FILE_ENV = "SIDE_EXIT_STATUS_FILE"
STATUS_FILE_ENV = "SIDE_EXIT_STATUS_FILE"  # the owner's exit status under `side-audit run --nproc` (side_audit.launch)
