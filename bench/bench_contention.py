"""Sharing the CPU: how much slower the audit's CPU stages get when something else is busy.

Two workloads, each the inner loop of a stage on the demo's sizes: ``train`` — the TI
classifier's training steps as the demo runs them (ResNet layout, width 16, 32 px grey, the 32
faces in one augmented batch, AdamW); ``sample`` — SIDE-guided DDIM steps of the demo model
with a folded TD classifier, batch 64. Each is measured as throughput over a fixed wall time (so
a 40× slowdown costs seconds, not an hour), in a fresh process so that OpenMP's wait policy,
read when torch loads, takes effect.

Scenarios: alone; next to a plain busy loop (one Python process spinning on one core); next
to a second copy of itself (two audits at once — both are measured). Thread set-ups: the
product's (``side_engine.cpu``: passive OpenMP waits, one thread per usable core, guidance
helper thread only when it pays) against torch's defaults (what the product did before), and
single changes between them.

    python bench/bench_contention.py [--seconds 15] [--kinds train,sample] [--setups NAME,NAME]
                                     [--json bench/results/contention.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUPS = {
    # name: (environment additions, torch threads (0: product's choice), sampler overlap)
    "torch defaults (before)": ({"OMP_WAIT_POLICY": ""}, -1, "old"),
    "short spins": ({"GOMP_SPINCOUNT": "10000"}, -1, "old"),
    "passive waits": ({"OMP_WAIT_POLICY": "PASSIVE"}, -1, "old"),
    "passive + no helper thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, -1, "off"),
    "product (after)": ({}, 0, "product"),
}


def worker(kind: str, seconds: float, threads: int, overlap: str, sample_steps: int = 10) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from side_engine import cpu

    if threads >= 0:
        cpu.set_torch_threads(threads)
    from side_engine.classifiers import ResNetClassifier, for_guidance, time_dependent_from

    gen = torch.Generator().manual_seed(0)
    if kind == "train":
        from side_engine.classifier_training import augment

        model = ResNetClassifier(32, 1, 16)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(32, 1, 32, 32, generator=gen)
        y = torch.arange(32)

        def step():
            loss = torch.nn.functional.cross_entropy(model(augment(x, gen, 2)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
    else:
        from side_engine.checkpoint import load_target
        from side_engine.demo import DEMO_MODEL
        from side_engine.sampler import Guide, GuidedSampler

        target = load_target(DEMO_MODEL)
        clf = for_guidance(time_dependent_from(ResNetClassifier(32, 1, 16)).eval().requires_grad_(False))
        kw = {"product": {}, "off": {"overlap": False}}.get(overlap, {"overlap": torch.get_num_threads() > 1})
        s = GuidedSampler(target.unet, target.scheduler, "ddim", sample_steps, 0.0, torch.device("cpu"), "fp32", **kw)
        noise = torch.randn(64, 1, 32, 32, generator=gen)
        lam, cls, rows = torch.full((64,), 10.0), torch.arange(64) % 32, torch.arange(64)

        def step():
            s.sample(noise, lam, cls, [Guide(clf, rows, True)])
    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    dt = time.perf_counter() - t0
    print(json.dumps({"kind": kind, "rate": n / dt, "steps": n, "seconds": dt, "threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}), flush=True)


def spawn(kind: str, seconds: float, setup: str, sample_steps: int) -> subprocess.Popen:
    extra, threads, overlap = SETUPS[setup]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    for k, v in extra.items():
        if v:
            env[k] = v
        else:
            env.pop(k, None)
    if setup == "product (after)":
        env.pop("OMP_WAIT_POLICY", None)  # the product sets it itself, as the CLI does
        pre = "from side_engine import cpu; cpu.prefer_passive_waits(); "
    else:
        pre = ""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); {pre}"
            f"from bench.bench_contention import worker; worker({kind!r}, {seconds}, {threads}, {overlap!r}, "
            f"{sample_steps})")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def result(p: subprocess.Popen) -> dict:
    out, _ = p.communicate()
    return json.loads(out.strip().splitlines()[-1])


def measure(kind: str, setup: str, scenario: str, seconds: float, sample_steps: int) -> float:
    busy = None
    if scenario == "busy loop":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    try:
        procs = [spawn(kind, seconds, setup, sample_steps)]
        if scenario == "second copy":
            procs.append(spawn(kind, seconds, setup, sample_steps))
        rates = [result(p)["rate"] for p in procs]
    finally:
        if busy:
            busy.kill()
            busy.wait()
    return sum(rates) / len(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--kinds", default="train,sample")
    ap.add_argument("--sample-steps", type=int, default=10, help="DDIM steps per sampled batch (one timed call)")
    ap.add_argument("--setups", default=",".join(SETUPS), help="names from SETUPS, comma-separated")
    ap.add_argument("--json")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from side_engine import cpu

    print(f"# {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, usable {cpu.usable_cores()}; "
          f"{args.seconds:g} s per measurement; rate = steps/s of one process", flush=True)
    rows = []
    for kind in args.kinds.split(","):
        for setup in args.setups.split(","):
            if kind == "train" and SETUPS[setup][2] == "off":
                continue  # no sampler in that workload
            rates = {sc: measure(kind, setup, sc, args.seconds, args.sample_steps)
                     for sc in ("alone", "busy loop", "second copy")}
            row = {"kind": kind, "setup": setup, **rates,
                   "slowdown busy loop": rates["alone"] / rates["busy loop"],
                   "slowdown second copy": rates["alone"] / rates["second copy"]}
            rows.append(row)
            print(f"{kind:<7} {setup:<26} alone {rates['alone']:7.2f}/s  busy {rates['busy loop']:7.2f}/s "
                  f"(x{row['slowdown busy loop']:.1f} slower)  2nd copy {rates['second copy']:7.2f}/s "
                  f"(x{row['slowdown second copy']:.1f} slower)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
