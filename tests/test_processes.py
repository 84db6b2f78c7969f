"""One audit on several processes (torchrun): equal to one process, resumable after a stop, a
killed rank or Ctrl-C; refused clearly where it cannot run."""


import json

import numpy as np
import pytest

from side_audit.cli import main
from side_engine import storage
from side_engine.audit import AuditRunner, init_workspace
from side_engine.errors import Cancelled, WorkspaceError
from side_engine.progress import RecordingProgress

from .conftest import TINY_SETTINGS, stored_samples


@pytest.mark.slow
def test_two_processes_through_torchrun_make_the_single_process_audit_and_resume_a_stopped_one(
        tmp_path, tiny_model, faces):
    """`side-audit run WS --nproc 2` on CPU (gloo): rank 0 owns the workspace, rank 1 computes
    its share of the synthetic set and sampling from what rank 0 broadcast (the classifiers
    are trained by rank 0 alone on every core: on one machine's CPU that is as fast, and the
    single-process training); the audit equals a single-process one — also when two torchrun
    agents meet at a c10d rendezvous and resume an audit that a single process stopped
    mid-sampling."""
    import os
    import subprocess
    import sys

    from tests.test_distributed import _free_port

    whole = init_workspace(tmp_path / "whole", str(tiny_model), str(faces), **TINY_SETTINGS)
    AuditRunner(whole).run()
    two = init_workspace(tmp_path / "two", str(tiny_model), str(faces), **TINY_SETTINGS)
    assert main(["run", str(two.root), "--nproc", "2", "--quiet"]) == 0
    _same_samples(whole, two)
    log = two.log_path.read_text()
    remote = int(log.split("sampling on 2 processes: ")[1].split(" of ")[0])
    assert remote >= 1  # rank 1 really computed batches
    # one machine's CPU: the owner trains the classifiers alone on every core, as one process does
    assert "TDKD training on the owner with every core" in log

    def layout(ws):
        db = storage.connect(ws.db_path)
        try:
            return {r["name"]: json.loads(r["details"])["trained_by"] for r in db["classifiers"].rows}
        finally:
            db.close()

    assert layout(two) == layout(whole)  # the same thread count as the single process
    stopped = init_workspace(tmp_path / "stopped", str(tiny_model), str(faces), **TINY_SETTINGS)
    with pytest.raises(Cancelled):
        AuditRunner(stopped, RecordingProgress(cancel_after=("sample", 8))).run()
    # the cluster form, as far as one machine allows: two "nodes" (two torchrun agents) meet at a
    # c10d rendezvous on localhost; only one of them sees the workspace (a relative path from
    # its own folder), as on a cluster without a shared file system, and its rank owns the audit
    port = _free_port()
    elsewhere = tmp_path / "node-without-the-workspace"
    elsewhere.mkdir()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
              "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=side-test",
              "-m", "side_audit.launch", "stopped", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    nodes = [subprocess.Popen(launch, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for cwd in (tmp_path, elsewhere)]
    outs = [node.communicate(timeout=300)[0].decode(errors="replace") for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    _same_samples(whole, stopped)
    assert "sampling on 2 processes" in stopped.log_path.read_text().split("run started")[-1]

def _same_samples(ws_a, ws_b, atol: float = 2e-4) -> None:
    """Two audits made the same samples, within float tolerance: processes with other thread
    counts sum in another order, and over guided steps scores drift by up to ~5e-5 (measured);
    that may flip the nearest of two training images at an exact tie (Gu ratio ~1), so the
    nearest is compared only where it is not a tie."""
    def rows(ws):
        db = storage.connect(ws.db_path)
        out = [tuple(r.values()) for r in db.query(
            "select method, lam, sample_index, seed, cls, best, nearest, gu_ratio from samples "
            "order by method, lam, sample_index")]
        db.close()
        return out

    a, b = rows(ws_a), rows(ws_b)
    assert [r[:5] for r in a] == [r[:5] for r in b]  # the same samples, seeds and target classes
    assert np.allclose([r[5] for r in a], [r[5] for r in b], atol=atol)
    assert all(x[6] == y[6] for x, y in zip(a, b) if (x[7] or 0) < 0.999)
    assert stored_samples(ws_a)[1] == stored_samples(ws_b)[1]  # the same in-band pairs

def _once_stored(job, ws, n: int, timeout: float = 240) -> bool:
    """Wait (polling read-only) until the running ``job`` has stored ``n`` samples; False if it
    ended or the time ran out first."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and job.poll() is None:
        if ws.db_path.exists():
            try:
                db = storage.connect(ws.db_path, readonly=True)
                try:
                    stored = db["samples"].count if "samples" in db.table_names() else 0
                finally:
                    db.close()
            except WorkspaceError:  # not created yet
                stored = 0
            if stored >= n:
                return True
        time.sleep(0.2)
    return False

def _rank_pids(rank: int, workspace) -> list[int]:
    """Processes of `side_audit.launch` started by torchrun with this RANK for this workspace
    (the suite runs on two workers: another test's ranks may be running beside this one's, and
    killing one of them failed that test)."""
    from pathlib import Path

    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"side_audit.launch" in cmd and f"RANK={rank}".encode() in env
                and any(str(workspace).encode() in part for part in cmd)):
            pids.append(int(proc.name))
    return pids

@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="needs /proc to find the rank")
def test_a_rank_killed_mid_sampling_loses_nothing_stored_and_a_resume_completes_the_audit(
        tmp_path, tiny_model, faces):
    import os
    import signal
    import subprocess
    import sys

    settings = dict(TINY_SETTINGS, n_per_lambda=40, steps=10)
    whole = init_workspace(tmp_path / "whole", str(tiny_model), str(faces), **settings)
    AuditRunner(whole).run()
    ws = init_workspace(tmp_path / "killed", str(tiny_model), str(faces), **settings)
    job = subprocess.Popen([sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--nproc", "2", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    if _once_stored(job, ws, 16) and (pids := _rank_pids(1, ws.root)):
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed = True
    assert killed, "the job finished before a rank could be killed"
    assert job.wait(timeout=240) != 0  # the job stops: a rank is gone
    db = storage.connect(ws.db_path)
    stored = db["samples"].count
    keys = [tuple(r.values()) for r in db.query("select method, lam, sample_index from samples")]
    db.close()
    assert 16 <= stored < 120 and len(keys) == len(set(keys))  # whole batches kept, none twice
    assert main(["run", str(ws.root), "--quiet"]) == 0  # a resume (any number of processes) completes it
    _same_samples(whole, ws)

@pytest.mark.slow
def test_ctrl_c_on_a_multi_process_run_stops_it_cleanly_after_its_batch(tmp_path, tiny_model, faces):
    """Ctrl-C in a terminal signals the terminal's process group: the CLI (torchrun and the ranks
    run in a group of their own) asks the run to stop through the workspace's stop request, the
    owner stops after its batch and tells the others, the CLI waits for that and exits 130 with
    no launcher traceback, the run log says "stopped", and a resume completes the audit."""
    import os
    import signal
    import subprocess
    import sys

    settings = dict(TINY_SETTINGS, n_per_lambda=40, steps=10)
    ws = init_workspace(tmp_path / "ws", str(tiny_model), str(faces), **settings)
    # a terminal's foreground job: Ctrl-C not ignored. A suite started in the background (`&`)
    # hands its children an ignored SIGINT, which Python then keeps — the CLI rightly ran on
    # and the test failed with exit status 0
    job = subprocess.Popen([sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--nproc", "2", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    sent = False
    if _once_stored(job, ws, 16):
        os.killpg(job.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        sent = True
    assert sent, "the job finished before it could be interrupted"
    err = job.communicate(timeout=120)[1].decode(errors="replace")
    assert job.returncode == 130, err[-3000:]  # stopped by the user, resumable (as a single-process run)
    assert "stopping after the current batch" in err and "Traceback" not in err  # torchrun is not signalled
    assert "run stopped by the user (resumable)" in ws.log_path.read_text()
    db = storage.connect(ws.db_path)
    keys = [tuple(r.values()) for r in db.query("select method, lam, sample_index from samples")]
    stages = {r["name"]: r["status"] for r in storage.stage_rows(db)}
    db.close()
    assert 16 <= len(keys) < len(ws.load_config().grid()) * 40 and len(set(keys)) == len(keys)
    assert stages["sample"] == "stopped"
    assert main(["run", str(ws.root), "--quiet"]) == 0

def test_several_processes_from_a_frozen_bundle_are_refused_clearly(tiny_workspace, monkeypatch, capsys):
    """A PyInstaller bundle cannot start `python -m torch.distributed.run`: say so, run nothing."""
    import sys

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert main(["run", str(tiny_workspace.root), "--nproc", "2"]) == 2
    assert "runs one process" in capsys.readouterr().err
    assert not tiny_workspace.db_path.exists()

def test_a_multi_process_run_of_a_missing_or_broken_workspace_is_refused_once_before_torchrun(
        tmp_path, tiny_model, faces, capsys):
    """The CLI reads the workspace before it starts torchrun: one error naming the folder or
    setting, not one from every rank followed by the launcher's traceback. An error only the
    run can find (unreadable weights) is said once, by the process that owns the workspace, with
    its exit status, and torchrun adds no traceback below it."""
    import shutil
    import subprocess
    import sys

    assert main(["run", str(tmp_path / "nothing"), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("nothing: no such folder") == 1 and "Traceback" not in err
    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model, broken)
    ws = init_workspace(tmp_path / "ws", str(broken), str(faces), **TINY_SETTINGS)
    next(broken.rglob("*.safetensors")).write_bytes(b"not a safetensors file")  # damaged after init
    toml = ws.config_path
    good = toml.read_text()
    toml.write_text(good.replace("\nsteps = ", "\nsteps = -"))
    assert main(["run", str(ws.root), "--nproc", "2"]) == 2
    err = capsys.readouterr().err
    assert "steps" in err and "Traceback" not in err
    toml.write_text(good)
    job = subprocess.run([sys.executable, "-m", "side_audit.cli", "run", str(ws.root), "--nproc", "2"],
                         capture_output=True, text=True, timeout=240)
    assert job.returncode == 2
    assert job.stderr.count("unreadable safetensors file") == 1, job.stderr
    assert "Traceback" not in job.stderr and "ChildFailedError" not in job.stderr
