"""``side-audit``: the headless front end over the engine.

Exit codes: 0 ok, 1 unexpected error, 2 bad settings or input, 3 workspace
inconsistent or unwritable, 130 stopped by the user (resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched at run time
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

from side_engine import __version__, cpu  # noqa: E402

# before torch loads: idle OpenMP threads sleep rather than spin, so a second audit or any busy
# program on the machine does not slow this one down several-fold (bench/RESULTS.md)
cpu.prefer_passive_waits()
from side_engine.errors import ERROR_PREFIX, SideError  # noqa: E402
from side_engine.progress import Progress  # noqa: E402


class RichProgress(Progress):
    """Bars with ETA per stage; Ctrl-C asks the engine to stop after the current batch."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bars

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.bars = Bars(TextColumn("{task.description:<11}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                         console=self.console, disable=quiet, transient=False)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total, completed=done)
        self.bars.update(self.tasks[stage], completed=done, total=total)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.bars.console.print(f"[dim]·[/dim] {message}")

    def stage_finished(self, stage: str, seconds: float) -> None:
        if stage in self.tasks:
            task = self.bars.tasks[self.tasks[stage]]
            self.bars.update(self.tasks[stage], completed=task.total or 1, total=task.total or 1)


SIGINT_ECHO_S = 2.0  # a second SIGINT this soon is the same request, forwarded (torchrun forwards Ctrl-C)


def _install_sigint(progress: Progress):
    first = []

    def handler(signum, frame):
        if progress.cancelled:  # second Ctrl-C: stop now (committed batches are kept)
            if first and time.monotonic() - first[0] < SIGINT_ECHO_S:
                return
            raise KeyboardInterrupt
        first.append(time.monotonic())
        progress.cancel()
        print("\nstopping after the current batch… (Ctrl-C again to stop at once)", file=sys.stderr)

    return signal.signal(signal.SIGINT, handler)


# -- commands ---------------------------------------------------------------------

def cmd_init(args) -> int:
    from side_engine.audit import init_workspace
    from side_engine.config import PRESETS

    settings = dict(PRESETS[args.preset]) if args.preset else {}
    if args.label_source:
        settings["label_source"] = args.label_source
    if args.lambdas:
        settings["lambdas"] = parse_lambdas(args.lambdas)
    if args.device:
        settings["device"] = args.device
    if args.n_per_lambda:
        settings["n_per_lambda"] = args.n_per_lambda
    if args.weights:
        settings["weights"] = args.weights
    if args.heldout_data:
        settings["heldout_data"] = args.heldout_data
    ws = init_workspace(args.workspace, args.checkpoint, args.train_data, args.labels or "",
                        overwrite=args.force, **settings)
    from side_engine.checkpoint import describe_checkpoint, inspect_checkpoint

    cfg = ws.load_config()
    info = inspect_checkpoint(cfg.checkpoint, cfg.scheduler_config, cfg.allow_pickle, cfg.weights)
    print(f"model: {describe_checkpoint(info)}")
    print(f"wrote {ws.config_path}\nedit it if needed, then: side-audit run {ws.root}")
    return 0


def parse_settings(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs, each value as TOML would read it (numbers, strings, lists)."""
    import tomllib

    from side_engine.errors import ConfigError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: write KEY=VALUE, e.g. --set guidance_schedule=constant")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value.strip()  # a bare word: a string setting
    return out


def cmd_fork(args) -> int:
    from side_engine.config import PRESETS
    from side_engine.fork import fork

    changes = dict(PRESETS[args.preset]) if args.preset else {}
    changes.update(parse_settings(args.set))
    record = fork(args.base, args.workspace, changes)
    reused = ", ".join(record["reused"]) or "nothing"
    print(f"forked {record['base']} -> {args.workspace}: reuses {reused}; changed "
          f"{', '.join(f'{k} = {v!r}' for k, v in record['changes'].items()) or 'nothing'}")
    if "random_kept" in record:
        print(f"samples carried over (the same images a rerun would make): {record['random_kept']} Random"
              + (f", {record['guided_kept']} guided" if "guided_kept" in record else ""))
    print(f"then: side-audit run {args.workspace}")
    return 0


def parse_lambdas(text: str) -> list[float]:
    from side_engine.errors import ConfigError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--lambdas {text!r}: give numbers separated by commas, e.g. 0,1,2,5") from None
    return [int(v) if v.is_integer() else v for v in values]


def run_workspace(workspace: str | Path, quiet: bool = False) -> dict:
    from side_engine.audit import AuditRunner

    with RichProgress(quiet=quiet) as progress:
        old = _install_sigint(progress)
        try:
            return AuditRunner(workspace, progress).run()
        finally:
            signal.signal(signal.SIGINT, old)


def cmd_run(args) -> int:
    from side_engine.errors import ConfigError
    from side_engine.workspace import Workspace

    # read here even with --nproc: a missing workspace or a bad setting is said once, before
    # torchrun starts ranks that would each say it and the launcher would add its traceback
    processes = Workspace(args.workspace).load_config().processes
    nproc = processes if args.nproc is None else args.nproc
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give 1 or more processes")
    if nproc > 1:
        from side_engine.ranks import refuse_in_frozen_bundle

        refuse_in_frozen_bundle(nproc)
        return run_distributed(args.workspace, nproc, args.quiet)
    t0 = time.time()
    result = run_workspace(args.workspace, args.quiet)
    print_summary(result)
    print(f"\naudit complete in {time.time() - t0:.0f} s: {Path(args.workspace).resolve()}")
    return 0


def run_distributed(workspace: str, nproc: int, quiet: bool = False) -> int:
    """``--nproc N``: the same audit on N processes of this machine, started by PyTorch's own
    launcher (torchrun); the owner (``side_engine.ranks.elect_owner``) draws the progress."""
    import contextlib
    import subprocess
    import tempfile

    from side_engine.errors import WorkspaceError
    from side_engine.ranks import STATUS_FILE_ENV
    from side_engine.workspace import Workspace

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "side_audit.launch", str(workspace)] + (["--quiet"] if quiet else [])
    # each process's share of the cores (torchrun would otherwise set 1 and print a banner about it)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu.usable_cores() // nproc)))
    with tempfile.TemporaryDirectory(prefix="side-audit-") as tmp:
        status_file = Path(tmp) / "status"  # the owner's exit status when it said why (side_audit.launch._hand_back)
        env[STATUS_FILE_ENV] = str(status_file)
        # the launcher in a process group of its own: a terminal's Ctrl-C reaches only this process,
        # which asks the run to stop as `side-audit stop` does (torchrun, signalled itself, would
        # end the job with its own SignalException traceback under the run's last lines)
        group = {"process_group": 0} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        job = subprocess.Popen(cmd, env=env, **group)
        ws, asked = Workspace(workspace), False
        while True:
            try:
                code = job.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if asked and not ws.stop_path.exists():  # a run starting clears requests from before it
                    with contextlib.suppress(WorkspaceError):  # said at the Ctrl-C
                        ws.request_stop("Ctrl-C")
            except KeyboardInterrupt:
                if asked:
                    print("\nstopping now (the batches stored so far are kept)", file=sys.stderr)
                    if os.name == "posix":
                        os.killpg(job.pid, signal.SIGTERM)  # the launcher and every rank
                    else:
                        job.terminate()
                    continue
                asked = True
                try:
                    ws.request_stop("Ctrl-C")
                except WorkspaceError as e:  # the run cannot be asked: a second Ctrl-C stops it at once
                    print(f"\n{e}", file=sys.stderr)
                    continue
                print("\nstopping after the current batch… (Ctrl-C again to stop at once)", file=sys.stderr)
        if asked:
            ws.stop_path.unlink(missing_ok=True)  # the request ends with the run it stopped
        if code == 0 and status_file.exists():
            code = int(status_file.read_text(encoding="utf-8").strip() or 1)
    return code


def cmd_stop(args) -> int:
    from side_engine.errors import WorkspaceError
    from side_engine.workspace import Workspace

    ws = Workspace(args.workspace)
    if not ws.exists():
        raise WorkspaceError(f"{ws.root}: not an audit workspace (no audit.toml)")
    ws.request_stop("side-audit stop")
    print(f"asked the audit running in {ws.root} to stop after its current batch; `side-audit run` "
          "resumes it (a run started later clears the request)")
    return 0


def cmd_estimate(args) -> int:
    from side_engine.estimate import describe_seconds, estimate_workspace

    result = estimate_workspace(args.workspace)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    sec = result["seconds"]
    what = "the work left" if result["resumed"] else "the whole audit"
    print(f"≈ {describe_seconds(sec['total'])} on {result['device']} for {what} "
          f"({result['n_train']} training images; a timed probe, not a promise)")
    for stage in ("classifier", "synthetic", "tdkd", "sample"):
        line = f"  {stage:<11} {describe_seconds(sec.get(stage, 0.0))}"
        if stage == "classifier" and sec.get("classifier_at_most", 0.0) > sec.get(stage, 0.0):
            line += (f" (up to {describe_seconds(sec['classifier_at_most'])} if it trains on until it fits "
                     "its own images: classifier_fit)")
        print(line)
    return 0


def cmd_status(args) -> int:
    from side_engine import storage
    from side_engine.workspace import Workspace

    ws = Workspace(args.workspace)
    cfg = ws.load_config()
    if not ws.db_path.exists():
        print(f"{ws.root}: not started (settings in {ws.config_path})")
        return 0
    db = storage.connect(ws.db_path)
    try:
        print(f"workspace {ws.root}")
        print(f"{'stage':<11} {'status':<8} {'progress':>15} {'time':>9} {'peak memory':>12}")
        for r in storage.stage_rows(db):
            prog = f"{r['done'] or 0}/{r['total'] or 0}"
            secs = f"{r['seconds']:.1f} s" if r["seconds"] else ""
            peak = f"{r['peak_rss_mb']:.0f} MiB" if r.get("peak_rss_mb") else ""
            if r.get("peak_device_mb"):
                peak += f" (GPU {r['peak_device_mb']:.0f} MiB)"
            print(f"{r['name']:<11} {r['status'] or '':<8} {prog:>15} {secs:>9} {peak:>12}")
        n = db["samples"].count
        planned = len(cfg.grid()) * cfg.n_per_lambda
        print(f"samples stored: {n} of {planned}")
    finally:
        db.close()
    return 0


def cmd_metrics(args) -> int:
    from side_engine import results, storage
    from side_engine.workspace import Workspace

    ws = Workspace(args.workspace)
    ws.load_config()
    if not ws.db_path.exists():
        from side_engine.errors import WorkspaceError

        raise WorkspaceError(f"{ws.root}: the audit has not run yet; run `side-audit run {ws.root}`")
    db = storage.connect(ws.db_path)
    try:
        result = results.metrics_json(db)
    finally:
        db.close()
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_summary(result)
    return 0


def print_summary(result: dict) -> None:
    """Table-1 style: AMS / UMS per band for each method and λ (percent, 95 % interval), then the
    paired comparison over the declared λ range and the audit's warnings."""
    from rich.console import Console
    from rich.table import Table

    rows = result["rows"]
    if not rows:
        print("no metrics yet")
        return
    audit = result["audit"]
    n = rows[0]["n_generated"]
    table = Table(title=f"Memorisation (scorer {audit.get('scorer')}, N_G = {n} per row; % of N_G "
                        "[95 % interval])")
    # the row labels never shrink away (an 80-column terminal once showed them zero-wide); the
    # rates wrap inside their cell instead of losing digits
    table.add_column("method", no_wrap=True, min_width=6)
    table.add_column("λ", justify="right", no_wrap=True, min_width=2)
    table.add_column("band", no_wrap=True, min_width=4)
    for name in ("AMS", "UMS", "on target (scorer)", "steered (TD)"):
        table.add_column(name, justify="right", overflow="fold")
    summary = {(s["method"], s["lambda"]): s for s in result.get("summary", [])}
    by_key: dict = {}
    for r in rows:
        by_key.setdefault((r["method"], r["lambda"]), {})[r["band"]] = r
    for (method, lam), bands in by_key.items():
        steer = summary.get((method, lam), {})
        acc = _ci({"s": steer.get("target_accuracy"), "s_lo": steer.get("target_accuracy_lo"),
                   "s_hi": steer.get("target_accuracy_hi")}, "s")
        reached = _ci(steer, "on_target")
        for i, band in enumerate(("high", "mid", "low")):
            b = bands.get(band, {})
            first = i == 0
            table.add_row(method if first else "", f"{lam:g}" if first else "", band, _ci(b, "ams"), _ci(b, "ums"),
                          reached if first else "", acc if first else "",
                          end_section=band == "low")
    console = Console()
    if not console.is_terminal:  # a file or a pipe: the table at full width, not Rich's default 80
        console = Console(width=max(console.width, 120))
    console.print(table)
    if result.get("on_target_by"):
        from side_engine.results import on_target_meaning

        console.print(on_target_meaning(result["on_target_by"]), highlight=False)
    from side_engine.report import verdict_line

    comparison = result.get("comparison") or {}
    for c in comparison.get("range", []):
        if c["cumulative"] and c["band"] == "mid":
            for key in ("ums", "ams"):
                console.print(verdict_line(c, key, "mid"), highlight=False)
    if comparison.get("conditional_on") and comparison.get("range"):
        console.print(f"Brackets: 95 % intervals, conditional on {comparison['conditional_on']} "
                      "(docs/method.md: how they were checked, and the spread between trainings).", highlight=False)
    for w in result.get("warnings", []):
        console.print(f"[bold red]Warning:[/] {w}", highlight=False)


def _ci(row: dict, key: str) -> str:
    """A row's rate ``key`` in per cent with its interval (the table's header says "%")."""
    from side_engine.results import with_interval

    return with_interval(row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi"), unit="")


def run_demo(args) -> Path:
    """Run (or resume) the demo audit and print its summary; returns the workspace, which the
    command may then open in the desktop app."""
    from side_engine.demo import ensure_demo_workspace
    from side_engine.workspace import Workspace

    root, created = ensure_demo_workspace(args.workspace, args.quick, args.fresh)
    ws = Workspace(root)
    print(f"demo workspace: {ws.root}{'' if created else ' (resuming; --fresh starts over)'}", file=sys.stderr)
    t0 = time.time()
    result = run_workspace(root)
    print_summary(result)
    for c in result.get("classifiers", []):
        print(f"{c['name'].upper()} classifier: accuracy {c['accuracy']:.2f} ({c['details']['measured_on']})")
    print(f"\ndemo audit finished in {time.time() - t0:.0f} s. Workspace: {ws.root}")
    print(f"  side-audit metrics {ws.root} --json   # every number\n  side-audit gui {ws.root}              "
          "# review the pairs")
    return ws.root


def cmd_demo(args) -> int:
    from side_engine.desktop_check import gui_problem, has_display

    root = run_demo(args)
    if not args.no_gui and has_display():
        if problem := gui_problem():
            print(f"\nthe desktop app cannot open here: {problem}", file=sys.stderr)
            return 0
        try:
            from side_gui.app import main as gui_main
        except ImportError:
            return 0
        return gui_main([str(root)])
    return 0


def cmd_gui(args) -> int:
    try:
        from side_gui.app import main as gui_main
    except ImportError as e:
        from side_engine.errors import ConfigError

        raise ConfigError(f"the desktop app is not available ({e})") from None
    argv = [str(args.workspace)] if args.workspace else []
    if args.screenshot:
        argv += ["--screenshot", str(args.screenshot)]
    return gui_main(argv)


def cmd_report(args) -> int:
    from side_engine.report import write_report

    pdf_writer = None
    if args.format == "pdf":  # the CLI is a front end: it hands the engine the Qt renderer
        try:
            from side_gui.report_pdf import write_pdf as pdf_writer
        except ImportError as e:
            from side_engine.errors import ConfigError

            raise ConfigError(f"PDF export needs PySide6 ({e})") from None
    path = write_report(args.workspace, args.format, args.out, redact=args.redact, top=args.top,
                        pdf_writer=pdf_writer)
    print(f"wrote {path}")
    return 0


def cmd_doctor(args) -> int:
    from side_engine.doctor import BAD, checks, render

    rows = checks(Path(args.workspace) if args.workspace else None)
    print(render(rows))
    return 1 if any(mark == BAD for mark, _, _ in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    from side_engine.config import LABEL_SOURCES

    p = argparse.ArgumentParser(prog="side-audit", description="Audit an unconditional diffusion model "
                                "for memorised training images (SIDE).")
    p.add_argument("--version", action="version", version=f"side-audit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help="create a workspace with every setting in audit.toml")
    s.add_argument("workspace")
    s.add_argument("--checkpoint", required=True, help="diffusers model folder")
    s.add_argument("--train-data", required=True, help="folder of training images")
    s.add_argument("--labels", help="CSV path,label (for label_source = original)")
    s.add_argument("--heldout-data", help="folder of held-out images of the same kind, not in the training set: "
                   "each band's false-alarm rate")
    s.add_argument("--label-source", choices=LABEL_SOURCES)
    s.add_argument("--lambdas", help="guidance scales, e.g. 0,1,2,5,10")
    s.add_argument("--n-per-lambda", type=int)
    s.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    s.add_argument("--weights", choices=["auto", "ema", "raw"],
                   help="UNet weights where both exist (default auto: EMA)")
    s.add_argument("--preset", choices=["paper"], help="start from a named method: paper = SIDE as the paper "
                   "runs it (λ at every step, its learning rates and λ scan)")
    s.add_argument("--force", action="store_true", help="overwrite an existing audit.toml")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("fork", help="a new audit reusing a finished audit's classifiers, with other settings "
                       "(e.g. the paper's preset on the same networks)")
    s.add_argument("base", help="the finished (or classifier-complete) audit's workspace")
    s.add_argument("workspace", help="the new workspace (a new folder)")
    s.add_argument("--preset", choices=["paper"], help="apply a named method's settings")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another setting, repeatable")
    s.set_defaults(func=cmd_fork)

    s = sub.add_parser("run", help="run the audit, or resume it where it stopped")
    s.add_argument("workspace")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--nproc", type=int, default=None,
                   help="processes (one per GPU, or CPU processes) through torchrun; 1 = this process; "
                        "default: the workspace's `processes` setting")
    s.set_defaults(func=cmd_run)

    # the commands that read one workspace and take nothing else (--json: the machine's reading)
    for name, func, json_too, text in (
            ("stop", cmd_stop, False, "ask the audit running in a workspace (any process, any node) to stop "
                                      "after its current batch; `run` resumes it"),
            ("estimate", cmd_estimate, True, "how long the audit (or what is left of it) will take, from a short "
                                             "probe"),
            ("status", cmd_status, False, "stages, progress and timings"),
            ("metrics", cmd_metrics, True, "AMS/UMS per method and λ")):
        s = sub.add_parser(name, help=text)
        s.add_argument("workspace")
        if json_too:
            s.add_argument("--json", action="store_true")
        s.set_defaults(func=func)

    s = sub.add_parser("demo", help="audit the bundled memorising face model (CPU, minutes)")
    s.add_argument("--workspace", help="where to put the demo audit (default: a folder in your data dir)")
    s.add_argument("--no-gui", action="store_true", help="stay in the terminal")
    s.add_argument("--quick", action="store_true", help="a reduced run (few samples, two λ) for checks")
    s.add_argument("--fresh", action="store_true", help="discard a previous demo workspace")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("gui", help="open the desktop app")
    s.add_argument("workspace", nargs="?")
    s.add_argument("--screenshot", help="render each main view to PNGs in this folder and exit")
    s.set_defaults(func=cmd_gui)

    s = sub.add_parser("report", help="export a report for privacy reviewers")
    s.add_argument("workspace")
    s.add_argument("--format", choices=["html", "pdf", "csv"], default="html")
    s.add_argument("--out", required=True)
    s.add_argument("--redact", action="store_true", help="no training-image pixels in the report")
    s.add_argument("--top", type=int, default=24, help="pairs shown in the gallery")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("doctor", help="versions, devices, SSCD model, Qt, free disk: one screen for a bug report")
    s.add_argument("workspace", nargs="?", help="the folder whose disk to check (default: the data folder)")
    s.set_defaults(func=cmd_doctor)
    return p


def command_names() -> set[str]:
    """The subcommands, for a front end that dispatches between CLI and app (the bundle)."""
    parser = build_parser()
    return {name for action in parser._subparsers._group_actions for name in action.choices}  # noqa: SLF001


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SideError as e:
        print(f"{ERROR_PREFIX}{e}", file=sys.stderr)
        return e.exit_code
    except sqlite3.OperationalError as e:
        print(f"{ERROR_PREFIX}workspace database: {e} (stored work is kept)", file=sys.stderr)
        return 3
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"{ERROR_PREFIX}{where}{e.strerror or e} (stored work is kept)", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("side-audit: stopped; committed work is kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
