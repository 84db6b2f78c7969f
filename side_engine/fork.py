"""A new audit that reuses a finished audit's classifiers: other sampling settings, same guide.

Training the classifiers and the synthetic set is most of an audit's CPU time, and none of it
depends on how the guide is then used (λ grid, schedule, seed of the samples, N_G). A fork
copies the finished stages whose settings it does not change and reruns the rest, so a
reviewer can run the paper's preset beside the product's on the same networks, and a study
can compare schedules without retraining (``bench/study_guidance.py``). What was reused, and
from which audit and seed, is stored with the fork and named in its report.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from . import storage
from .config import GUIDED_DEPENDS, RANDOM_DEPENDS, AuditConfig, movable, stage_settings
from .errors import ConfigError, WorkspaceError
from .workspace import Workspace

# every stage a fork may reuse, in order, with the settings its stored result depends on (each
# setting declares its stages in ``config``; the seed too trained the classifiers, but a fork with
# another seed keeps them, and says so)
REUSABLE: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (stage, stage_settings(stage)) for stage in ("import", "embed", "labels", "classifier", "synthetic", "tdkd"))
FILES = {"import": ["cache/train_pixels.npy", "cache/train_latents.npy"], "embed": ["cache/train_*.npy"],
         "labels": ["cache/synthetic_labels.npy", "cache/synthetic_centroids.npy"],
         "classifier": ["classifiers/ti.safetensors"],
         "synthetic": ["synthetic/*"], "tdkd": ["classifiers/td.safetensors"]}
# stored results that belong to sampling and after: never carried into a fork
CLEARED_TABLES = ("decisions", "matches", "samples", "metrics", "topk", "summary")
CLEARED_KEYS = ("comparison", "warnings", "guide_check", "estimate", "estimate_device", "estimate_per_image",
                "estimate_probe", "unseen", "extraction_n", "heldout", "calibration")
def changed_settings(base: AuditConfig, new: AuditConfig, verified: frozenset[str] = frozenset()) -> set[str]:
    """Settings that differ; a verified folder (``config.movable``) pointed at where it lies now
    is no change."""
    old = base.to_dict()
    return {k for k, v in new.to_dict().items() if old.get(k) != v} - verified


def reusable_stages(base: AuditConfig, new: AuditConfig, done: set[str],
                    verified: frozenset[str] = frozenset(), changed: set[str] | None = None) -> list[str]:
    """The leading stages whose settings are unchanged and which the base audit finished."""
    from .stages import stage_names

    changed = changed_settings(base, new, verified) if changed is None else changed
    depends = dict(REUSABLE)
    out = []
    for name in stage_names(new):  # the order they run in (synthetic-clusters: synthetic first)
        if name not in depends or name not in done or changed & depends[name]:
            break
        out.append(name)
    return out


def fork(base_dir: str | Path, new_dir: str | Path, changes: dict[str, Any]) -> dict:
    """Make the audit ``new_dir`` from ``base_dir`` with ``changes`` to its settings; returns
    the fork record (base, seed, reused stages). ``side-audit run`` on it does the rest."""
    base, new = Workspace(base_dir), Workspace(new_dir)
    if not base.db_path.exists():
        raise WorkspaceError(f"{base.root}: no audit database to fork (run the audit first)")
    if new.exists() or new.db_path.exists():
        raise WorkspaceError(f"{new.root}: already holds an audit; fork into a new folder")
    known = {f.name for f in dataclasses.fields(AuditConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"fork: unknown setting(s) {', '.join(unknown)}")
    db = storage.connect(base.db_path, readonly=True)
    try:
        rows = list(db["audits"].rows)
        if not rows:
            raise WorkspaceError(f"{base.root}: the audit has not started; nothing to reuse")
        base_cfg = AuditConfig.from_stored(json.loads(rows[0]["config"]))
        done = {r["name"] for r in storage.stage_rows(db) if r.get("status") == "done"}
        tdkd_seed = storage.get_kv(db, "tdkd_seed", base_cfg.seed)
        verified = movable(bool(storage.get_kv(db, "train_files_fingerprint")))
    finally:
        db.close()
    cfg = dataclasses.replace(base_cfg, **changes)
    cfg.validate()
    changed = changed_settings(base_cfg, cfg, verified)
    reused = reusable_stages(base_cfg, cfg, done, changed=changed)
    # Random's rows carry the cluster each image falls in when the audit has labels: kept with them
    from .stages import stage_names

    needed = {"import", "embed"} | ({"labels"} if "labels" in stage_names(cfg) else set())
    keep_random = "random" in cfg.methods and needed <= set(reused) and not changed & RANDOM_DEPENDS
    keep_guided = keep_random and "tdkd" in reused and not changed & GUIDED_DEPENDS
    new.write_config(cfg)
    _copy_database(base.db_path, new.db_path)
    for stage in reused:
        for pattern in FILES[stage]:
            for src in base.root.glob(pattern):
                dst = new.root / src.relative_to(base.root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    record = {"base": str(base.root), "base_seed": base_cfg.seed, "reused": reused,
              "changes": {k: v for k, v in changes.items() if getattr(base_cfg, k) != v}}
    out = storage.connect(new.db_path)
    try:
        with out.atomic():
            for table in CLEARED_TABLES:
                if keep_random and table in ("samples", "matches"):
                    continue
                out[table].delete_where()
            if keep_random:  # Random's rows below the new N_G and, with keep_guided, the guided rows at
                # the λ the new grid still has, with their matches and images; every other row goes
                kept = "(method = 'random' and sample_index < ?)"
                args: list[Any] = [cfg.n_per_lambda]
                guided = [m for m in cfg.methods if m != "random"]
                if keep_guided and guided:  # and the guided rows at λ the new grid still has
                    kept += (f" or (method in ({','.join('?' * len(guided))})"
                             f" and lam in ({','.join('?' * len(cfg.lambdas))}))")
                    args += [*guided, *map(float, cfg.lambdas)]
                gone = f"not ({kept})"
                out.execute(f"delete from matches where sample_id in (select id from samples where {gone})", args)
                out.execute(f"delete from samples where {gone}", args)
                record["random_kept"] = out["samples"].count_where("method = 'random'")
                if keep_guided:
                    record["guided_kept"] = out["samples"].count_where("method != 'random'")
                kept_png = {r["png"] for r in out.query("select png from samples") if r["png"]}
                for rel in kept_png:
                    src = base.root / rel
                    if src.exists():
                        dst = new.root / rel
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, dst)
            for key in CLEARED_KEYS:
                out["kv"].delete_where("key = ?", [key])
            marks = ",".join("?" * len(reused))
            out["stages"].delete_where(f"name not in ({marks})" if reused else "1 = 1", reused)
            out["audits"].update(1, {"config": json.dumps(cfg.to_dict()), "created": storage.now(),
                                     "checkpoint_path": str(Path(cfg.checkpoint).expanduser()),
                                     "train_path": str(Path(cfg.train_data).expanduser().resolve())})
            if "tdkd" in reused:
                storage.set_kv(out, "tdkd_seed", tdkd_seed)
            storage.set_kv(out, "forked_from", record)
    finally:
        out.close()
    return record


def _copy_database(src: Path, dst: Path) -> None:
    """A consistent copy even while the base is open elsewhere (SQLite's online backup)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    a = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    b = sqlite3.connect(str(dst))
    try:
        a.backup(b)
    finally:
        b.close()
        a.close()
