"""Are two workspaces' stored results the same? For a change that must not change results
(a refactor): run the same audit before and after, then

    python bench/compare_results.py WORKSPACE_BEFORE WORKSPACE_AFTER

It compares, byte for byte: ``metrics --json`` (less the creation time and the budget planner's
seconds, which come from a timing probe of the machine), every row of the samples, matches,
metrics, topk, summary and classifiers tables, and
the SHA-256 of every stored file (generated PNGs, synthetic chunks, caches; a classifier's
tensors and metadata).
Prints what differs; exits 1 if anything does.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from side_engine import results, storage  # noqa: E402
from side_engine.workspace import Workspace  # noqa: E402

TABLES = ("samples", "matches", "metrics", "topk", "summary", "classifiers", "train_images")
VOLATILE = ("created",)  # differs between two runs of one audit by construction


def snapshot(root: Path) -> dict:
    db = storage.connect(Workspace(root).db_path)
    try:
        metrics = results.metrics_json(db)
        for key in VOLATILE:
            metrics["audit"].pop(key, None)
        for row in (metrics.get("unseen") or {}).get("planner", []):
            row.pop("seconds", None)  # the budget planner's time: this machine's probe, timed afresh by each run
        # compared as text: a NaN (no interval) equals itself there, not under ==
        out = {"metrics_json": json.dumps(metrics, sort_keys=True, default=str)}
        for table in TABLES:
            out[table] = [json.dumps(r, sort_keys=True, default=str) for r in db.query(f"select * from {table}")]
    finally:
        db.close()
    out["files"] = {p.relative_to(root).as_posix(): digest(p) for p in sorted(root.rglob("*"))
                    if p.is_file() and p.suffix in (".png", ".npy", ".safetensors")}
    return out


def digest(path: Path) -> str:
    """SHA-256 of a file; of a safetensors file, of its tensors and metadata in name order (the
    library writes its metadata map in an order that changes from process to process)."""
    if path.suffix != ".safetensors":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), "np") as f:
        h.update(json.dumps(f.metadata(), sort_keys=True).encode())
        for key in sorted(f.keys()):
            h.update(key.encode() + f.get_tensor(key).tobytes())
    return h.hexdigest()


def main(argv: list[str]) -> int:
    a, b = (snapshot(Path(x)) for x in argv[:2])
    differ = 0
    for key in a:
        if a[key] != b[key]:
            differ += 1
            print(f"DIFFERENT: {key}")
            if isinstance(a[key], list):
                print(f"  {len(a[key])} vs {len(b[key])} rows; first differing: "
                      f"{next((x, y) for x, y in zip(a[key], b[key]) if x != y) if a[key] and b[key] else '-'}")
            elif key == "files":
                names = sorted(set(a[key]) ^ set(b[key])) or [n for n in a[key] if a[key][n] != b[key].get(n)]
                print(f"  {names[:10]}")
        else:
            size = len(a[key]) if isinstance(a[key], list | dict) else 1
            print(f"same: {key} ({size} {'rows' if isinstance(a[key], list) else 'entries'})")
    print("IDENTICAL" if not differ else f"{differ} part(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
