"""Every command that needs no window works where there is no display: a headless GPU server with
no Qt platform libraries, the usual place to run an audit. The rest of the suite sets
``QT_QPA_PLATFORM=offscreen`` for every test, which hides exactly this, so these commands run in
processes whose environment has no ``QT_QPA_PLATFORM``, ``DISPLAY`` or ``WAYLAND_DISPLAY`` (a PDF
report once aborted there: Qt tried its xcb plugin, found no display and called abort()).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

SCREENLESS = ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")


@pytest.fixture(scope="module")
def screenless(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("headless")
    env = {k: v for k, v in os.environ.items() if k not in SCREENLESS}
    env["SIDE_AUDIT_SETTINGS"] = str(tmp / "settings.json")  # never the user's list of recent audits

    def side_audit(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "side_audit.cli", *args], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=timeout)

    ws = tmp / "demo"
    done = side_audit("demo", "--quick", "--no-gui", "--workspace", str(ws))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Memorisation" in done.stdout
    return tmp, ws, side_audit


def test_a_pdf_report_needs_no_display(screenless):
    tmp, ws, side_audit = screenless
    out = tmp / "report.pdf"
    done = side_audit("report", str(ws), "--format", "pdf", "--out", str(out))
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -6 (SIGABRT) before
    assert out.read_bytes().startswith(b"%PDF") and out.stat().st_size > 10_000


def test_every_command_without_a_window_needs_no_display(screenless):
    tmp, ws, side_audit = screenless
    for args in (["run", str(ws), "--quiet"], ["estimate", str(ws)], ["doctor"],
                 ["report", str(ws), "--format", "html", "--out", str(tmp / "r.html")],
                 ["report", str(ws), "--format", "csv", "--out", str(tmp / "r.zip")]):
        done = side_audit(*args)
        assert done.returncode == 0, (args, done.returncode, done.stderr[-2000:])
    metrics = side_audit("metrics", str(ws), "--json")
    assert metrics.returncode == 0, metrics.stderr[-2000:]
    assert {r["method"] for r in json.loads(metrics.stdout)["rows"]} == {"random", "side"}
    assert "SIDE" in (tmp / "r.html").read_text(encoding="utf-8")
    assert zipfile.ZipFile(tmp / "r.zip").namelist()
