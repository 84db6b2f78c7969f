"""The entry point torchrun starts on every process: ``torchrun ... -m side_audit.launch WORKSPACE``.

Every process joins the group; the owner (``side_engine.ranks.elect_owner``) runs the audit as
``side-audit run`` does, the others serve it (``side_engine.rank_worker``) until it says stop.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from side_engine import cpu, ranks
from side_engine.rank_worker import run_device, worker_loop


def _hand_back(status: int) -> int:
    """The owner's exit status. Under ``side-audit run --nproc`` (which names a file in
    ranks.STATUS_FILE_ENV) an error the owner has already said, or a stop, goes back through that
    file and the process ends 0, so torchrun does not add its ChildFailedError traceback below
    the message (and the app, which shows the output's tail, shows the message). Started by
    hand, the status is the exit status, as schedulers expect."""
    path = os.environ.get(ranks.STATUS_FILE_ENV)
    if not status or not path:
        return status
    try:
        Path(path).write_text(str(status), encoding="utf-8")
    except OSError:
        return status
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m side_audit.launch",
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
        ranks.elect_owner(args.workspace)
        device = run_device(args.workspace)
        if dist.get_rank() == ranks.owner():
            from .cli import main as cli_main

            try:
                status = cli_main(["run", args.workspace, "--nproc", "1"] + (["--quiet"] if args.quiet else []))
            finally:
                ranks.send({"op": ranks.STOP})  # however the run ended, the other ranks stop too
            return _hand_back(status)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the owner's to act on: it says stop
        worker_loop(device)
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
