"""Farm cards and headline numbers of the report, built from the audit's tables.

Which farms get a card and in what order (:func:`card_order`), which patch a card shows
(:func:`card_patches`), its pictures (:func:`patch_figures`, :func:`attribution_figures`)
and the summary tiles (:func:`summary_numbers`). Nothing here reads files: patches and
attribution maps come in as arrays.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.audit.flags import SEVERITY, run_summary
from pipeline.audit.patches import PatchData
from pipeline.report import images as img
from pipeline.report.html import Card, Figure


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as dicts for the page, NaN and infinities as ``None``."""
    return [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def card_rank(verdicts: list[str]) -> str:
    """The most alarming of a target's verdicts (:data:`SEVERITY`; ``not_computable`` if none)."""
    known = [v for v in verdicts if v in SEVERITY]
    return min(known, key=SEVERITY.index) if known else "not_computable"


def card_order(flags: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The flag table's farm targets, most alarming first, then by their highest enrichment.

    Returns:
        ``((target kind, target id), the target's flag rows)`` per farm target.
    """
    if flags.empty:
        return []
    return sorted(
        flags.groupby(["target", "target_id"]),
        key=lambda kv: (
            SEVERITY.index(card_rank(kv[1]["verdict"].astype(str).tolist())),
            -float(np.nan_to_num(kv[1]["enrichment"].astype(float).max(), nan=0.0)),
        ),
    )


def capped_notes(flags: pd.DataFrame, max_cards: int) -> list[str]:
    """A note for the page when there are more farm targets than ``max_cards`` cards."""
    if flags.empty:
        return []
    if len(set(zip(flags["target"], flags["target_id"], strict=True))) <= max_cards:
        return []
    return [
        f"Only the {max_cards} most alarming farm cards are shown "
        "(report.max_cards); flags.csv has them all."
    ]


def card_patches(rows: pd.DataFrame) -> tuple[str, list[str]]:
    """The patch a farm card shows and all the farm's patches.

    The shown patch is the counterfactual's main patch, else the first of the farm's patches
    (``""`` when there is none).
    """
    cf_patches = [json.loads(v) for v in rows["cf_patch"].dropna().astype(str)]
    patch_ids = json.loads(str(rows["patch_ids"].iloc[0])) if "patch_ids" in rows else []
    shown = [*(c[0] for c in cf_patches if c), *patch_ids]
    return (shown[0] if shown else ""), patch_ids


def _figure(caption: str, rgb: np.ndarray) -> Figure:
    return Figure(caption, img.data_uri(img.png(rgb)))


def patch_figures(p: PatchData, target: np.ndarray | None) -> list[Figure]:
    """RGB, label and target, prediction and cue overlays of one patch.

    Args:
        p: The patch.
        target: ``(H, W)`` bool target mask on it (``None``: none drawn).
    """
    rgb = img.rgb_composite(p.image, p.bands)
    cues = {n: c.mask for n, c in p.cues.items() if c.mask is not None}
    return [
        _figure("RGB", rgb),
        _figure("label (yellow) / target", img.overlay(rgb, {"label": p.labels, "target": target})),
        _figure("prediction", img.overlay(rgb, {"prediction": p.predicted})),
        _figure(
            "cues: " + ", ".join(cues) if cues else "cues: none computable",
            img.overlay(rgb, cues),
        ),
    ]


def attribution_maps(index: pd.DataFrame, pid: str, key: tuple[str, str]) -> list[tuple[str, str]]:
    """``(method, raster path relative to the run)`` of a farm's maps on patch ``pid``.

    Sorted by method (the order of the card's pictures).
    """
    kind, tid = key
    sel = index[
        (index["patch_id"] == pid) & (index["target"] == kind) & (index["target_id"] == tid)
    ]
    return [(str(r["method"]), str(r["path"])) for _, r in sel.sort_values("method").iterrows()]


def attribution_figures(maps: Sequence[tuple[str, np.ndarray]]) -> tuple[list[Figure], float]:
    """One picture per ``(method, (H, W) aggregate map)`` and the largest colour scale used.

    Returns:
        ``(figures, scale)``; ``scale`` is 0 without maps (:func:`images.attribution_rgb`).
    """
    figures, limit = [], 0.0
    for method, aggregate in maps:
        rgb, scale = img.attribution_rgb(aggregate)
        limit = max(limit, scale)
        figures.append(_figure(f"{method} (±{scale:.2g})", rgb))
    return figures, limit


def make_card(
    key: tuple[str, str], rows: pd.DataFrame, pid: str, patch_ids: list[str], figures: list[Figure]
) -> Card:
    """The card of farm target ``key`` with its flag ``rows`` (one per cue)."""
    kind, tid = key
    verdict = card_rank(rows["verdict"].astype(str).tolist())
    subtitle = f"patch {pid or '–'} · patches {', '.join(patch_ids) or '–'}"
    return Card(f"{kind} {tid}", verdict, subtitle, figures, records(rows))


def colour_limit(limits: Sequence[float]) -> float:
    """The attribution colour ramp's half range: the largest positive card scale, else 1."""
    return max([lim for lim in limits if lim > 0], default=1.0)


def summary_numbers(flags: pd.DataFrame, n_patches: int) -> dict[str, Any]:
    """Headline counts for the summary tiles (farm targets, flagged, confirmed, ...)."""
    if flags.empty:
        return {
            "targets": 0,
            "flagged": 0,
            "confirmed": 0,
            "not_computable": 0,
            "patches": n_patches,
            "per_cue": {},
        }
    by_target = flags.groupby(["target", "target_id"])["verdict"]
    return {
        "targets": int(by_target.ngroups),
        "flagged": int(by_target.apply(lambda v: v.isin(["confirmed", "unconfirmed"]).any()).sum()),
        "confirmed": int(by_target.apply(lambda v: (v == "confirmed").any()).sum()),
        "not_computable": int((flags["verdict"] == "not_computable").sum()),
        "patches": n_patches,
        "per_cue": run_summary(flags),
    }
