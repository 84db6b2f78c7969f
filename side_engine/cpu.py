"""How many cores this process may really use, and CPU threading that shares them.

``os.cpu_count()`` counts the machine, not what the process is given: a CPU affinity mask
(``taskset``, a batch scheduler) or a cgroup quota (a container's ``--cpus``) can allow
fewer. Starting more compute threads than that makes them queue behind each other, and
OpenMP threads that spin while they wait burn the cores other work needs — on a 2-core
machine a second busy PyTorch process made a stage ~40× slower (bench/RESULTS.md, "Sharing
the CPU"). Reading this module imports nothing heavy, so the CLI can call
:func:`prefer_passive_waits` before torch is loaded.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _own_cgroup_paths() -> list[Path]:
    """This process's cgroup folders for the cpu controller (v2 unified, v1 ``cpu``), deepest first."""
    out: list[Path] = []
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":
            bases = [CGROUP]
        elif "cpu" in controllers.split(","):
            bases = [CGROUP / "cpu", CGROUP / "cpu,cpuacct", CGROUP / "cpuacct,cpu"]
        else:
            continue
        for base in bases:
            p = base / rel
            while True:  # a quota on any ancestor limits us too
                out.append(p)
                if p == base:
                    break
                p = p.parent
    return out


def cgroup_quota() -> float | None:
    """The CPU time the cgroup allows, in cores (``--cpus=1.5`` gives 1.5); None when unlimited."""
    quotas = []
    for folder in _own_cgroup_paths():
        try:
            v2 = folder / "cpu.max"
            if v2.exists():
                quota, period = v2.read_text().split()[:2]
                if quota != "max":
                    quotas.append(int(quota) / int(period))
                continue
            q, p = folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"
            if q.exists() and p.exists():
                quota_us = int(q.read_text())
                if quota_us > 0:
                    quotas.append(quota_us / int(p.read_text()))
        except (OSError, ValueError):
            continue
    return min(quotas) if quotas else None


def machine_cores() -> int:
    """Cores this process's machine share holds: the affinity mask, lowered to a cgroup quota
    (rounded up) — for every process torchrun started here together."""
    cores = affinity_cores()
    quota = cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def usable_cores() -> int:
    """Cores this process may keep busy: ``machine_cores``, shared with the other processes
    torchrun started on this machine (LOCAL_WORLD_SIZE)."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, machine_cores() // max(local, 1))


def prefer_passive_waits() -> None:
    """OpenMP threads that finish early sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``)
    unless the user chose a policy. Only takes effect before torch is imported (the OpenMP
    runtime reads it when it loads); a no-op afterwards."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def set_torch_threads(threads: int) -> int:
    """``threads`` > 0: exactly that many (the setting's meaning); 0: one per usable core.
    Returns the count in force."""
    import torch

    n = threads if threads > 0 else usable_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()
