"""The reviewer's side of an audit: the stored (generated, nearest training) pairs as the
gallery lists them, each pair's other in-band matches, and the decisions taken on them."""

from __future__ import annotations

import numpy as np
import sqlite_utils

from . import measures
from .results import stored_bands
from .scorers import Band

DECISIONS = ("memorised", "not a copy", "unsure")


def gallery_rows(db: sqlite_utils.Database, band: str | None = None, method: str | None = None,
                 lam: float | None = None, train_idx: int | None = None, limit: int | None = None) -> list[dict]:
    """(generated, nearest training) pairs with a stored PNG, closest first (the first ``limit``)."""
    bands, higher = stored_bands(db)
    where, args = _gallery_where(bands, higher, band, method, lam, train_idx)
    order = "desc" if higher else "asc"
    rows = list(db.query(
        f"select s.id, s.method, s.lam, s.sample_index, s.seed, s.cls, s.best, s.nearest, s.png, "
        f"t.path as train_path, d.decision from samples s join train_images t on t.idx = s.nearest "
        f"left join decisions d on d.sample_id = s.id where {' and '.join(where)} order by s.best {order}, s.id"
        + (f" limit {int(limit)}" if limit else ""), args))
    for r, name in zip(rows, bands_of(np.array([r["best"] for r in rows], dtype=np.float64), bands, higher)):
        r["band"] = name
    if band:
        rows = [r for r in rows if r["band"] == band]
    return rows


def gallery_count(db: sqlite_utils.Database, band: str | None = None, method: str | None = None,
                  lam: float | None = None, train_idx: int | None = None) -> int:
    """How many pairs ``gallery_rows`` holds for these filters, without reading them."""
    bands, higher = stored_bands(db)
    where, args = _gallery_where(bands, higher, band, method, lam, train_idx)
    return db.execute(f"select count(*) from samples s where {' and '.join(where)}", args).fetchone()[0]


def _gallery_where(bands, higher, band, method, lam, train_idx) -> tuple[list[str], list]:
    where, args = ["s.png is not null"], []
    if method:
        where.append("s.method = ?")
        args.append(method)
    if lam is not None:
        where.append("s.lam = ?")
        args.append(lam)
    if train_idx is not None:
        where.append("s.id in (select sample_id from matches where train_idx = ?)")
        args.append(train_idx)
    chosen = next((b for b in bands if b.name == band), None)
    if chosen is not None:  # the band's own bounds, so SQL reads only its rows
        lo, hi = measures.band_bounds(chosen, bands, higher)
        for bound, op in ((lo, ">="), (hi, "<")):
            if bound is not None:
                where.append(f"s.best {op} ?")
                args.append(bound)
    return where, args


def bands_of(scores: np.ndarray, bands: list[Band], higher: bool) -> list[str | None]:
    """``band_of`` for many scores at once (a gallery holds ~10^5 pairs at the paper's scale)."""
    out = np.full(len(scores), None, dtype=object)
    for b in bands:  # closest last: it wins where bands touch, as in ``band_of``
        out[measures.in_band(scores, b, bands, higher)] = b.name
    return out.tolist()


def band_of(score: float, bands: list[Band], higher: bool) -> str | None:
    for b in reversed(bands):  # closest first
        if measures.in_band(np.array([score]), b, bands, higher)[0]:
            return b.name
    return None


def sample_matches(db: sqlite_utils.Database, sample_id: int) -> list[dict]:
    """Every in-band training image of one generated image, closest first."""
    _, higher = stored_bands(db)
    order = "desc" if higher else "asc"
    return list(db.query(f"select m.train_idx, m.score, t.path from matches m join train_images t "
                         f"on t.idx = m.train_idx where m.sample_id = ? order by m.score {order}", [sample_id]))


def set_decision(db: sqlite_utils.Database, sample_ids: list[int], decision: str | None, note: str = "") -> None:
    """Store (or, with ``None``, clear) the reviewer's decision for each pair."""
    from .storage import now

    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}")
    with db.atomic():
        for sid in sample_ids:
            if decision is None:
                db.execute("delete from decisions where sample_id = ?", [sid])
                continue
            nearest = db.execute("select nearest from samples where id = ?", [sid]).fetchone()
            db["decisions"].upsert({"sample_id": sid, "train_idx": nearest[0] if nearest else None,
                                    "decision": decision, "note": note, "decided_at": now()}, pk="sample_id")
