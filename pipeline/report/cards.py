"""Farm cards and the headline of the report, built from the audit's tables.

Which farms get a card and in what order (:func:`card_order`, on the farm table of
``audit/flags.gpkg``), which patch a card shows (:func:`card_patches`), its pictures
(:func:`card_views`), the words of its verdicts and the one-sentence answer at the top of the
page (:func:`answer`). Nothing here reads files: patches and attribution maps come in as arrays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.attribution.methods import METHODS
from pipeline.audit.flags import SEVERITY, run_summary, verdict_in_words
from pipeline.audit.patches import PatchData
from pipeline.config.audit import AuditConfig
from pipeline.geo.styles import ramp_limit
from pipeline.report import images
from pipeline.report.html import Card, CardViews, ColourBar, Figure

#: Pixels (about) of a card's large pictures and of its thumbnails (patches are enlarged by
#: a whole factor, nearest, so outlines stay crisp).
BIG_PX, SMALL_PX = 512, 256

#: Verdicts that mean the cue is there to lean on.
PRESENT = ("confirmed", "unconfirmed", "not_flagged")


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ``frame`` as dicts for the page, NaN and infinities as ``None``."""
    return [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def cues_of(farms: pd.DataFrame) -> list[str]:
    """The cues of a farm table (its ``<cue>_verdict`` columns), in table order."""
    return [c.removesuffix("_verdict") for c in farms.columns if c.endswith("_verdict")]


def concern(row: Mapping[str, Any], cues: Sequence[str]) -> tuple[int, float]:
    """Sort key of a farm: its verdict's rank in :data:`SEVERITY`, then minus its highest
    enrichment over the cues present (most alarming first)."""
    verdict = str(row["verdict"])
    rank = SEVERITY.index(verdict) if verdict in SEVERITY else len(SEVERITY)  # type: ignore[arg-type]
    values = [
        float(row[f"{c}_enrichment"])
        for c in cues
        if row.get(f"{c}_verdict") in PRESENT and np.isfinite(float(row[f"{c}_enrichment"]))
    ]
    return rank, -max(values, default=0.0)


def card_order(farms: pd.DataFrame) -> list[dict[str, Any]]:
    """The farm table's rows, most alarming first: confirmed, then unconfirmed flags, then
    the rest, each by highest enrichment."""
    if farms.empty:
        return []
    cues = cues_of(farms)
    rows = farms.to_dict(orient="records")
    return sorted(rows, key=lambda r: concern(r, cues))


def anchor(kind: str, target_id: str) -> str:
    """The HTML id of a farm's card."""
    return "card-" + "".join(ch if ch.isalnum() else "-" for ch in f"{kind}-{target_id}")


def capped_notes(n_farms: int, max_cards: int) -> list[str]:
    """A note for the page when there are more farms than ``max_cards`` cards."""
    if n_farms <= max_cards:
        return []
    return [
        f"Cards are shown for the {max_cards} most alarming of {n_farms} farms "
        "(report.max_cards); the tables below and audit/flags.gpkg have them all."
    ]


def card_patches(rows: pd.DataFrame) -> tuple[str, list[str]]:
    """The patch a farm card shows and all the farm's patches.

    The shown patch is the counterfactual's main patch, else the first of the farm's patches
    (``""`` when there is none).
    """
    cf_patches = [json.loads(v) for v in rows["cf_patch"].dropna().astype(str) if v.startswith("[")]
    patch_ids = json.loads(str(rows["patch_ids"].iloc[0])) if "patch_ids" in rows else []
    shown = [*(c[0] for c in cf_patches if c), *patch_ids]
    return (shown[0] if shown else ""), patch_ids


def attribution_maps(index: pd.DataFrame, pid: str, key: tuple[str, str]) -> list[tuple[str, str]]:
    """``(method, raster path relative to the run)`` of a farm's maps on patch ``pid``.

    Sorted by method.
    """
    kind, tid = key
    sel = index[
        (index["patch_id"] == pid) & (index["target"] == kind) & (index["target_id"] == tid)
    ]
    return [(str(r["method"]), str(r["path"])) for _, r in sel.sort_values("method").iterrows()]


def units(method: str) -> str:
    """What an attribution map's values are, for its colour bar."""
    spec = METHODS.get(method)
    if spec is None or spec.reduction == "max_abs":
        return "|d logit / d input|, largest over the bands (logit per unit of normalized input)"
    if spec.reduction == "sum_abs":
        return "|contribution| to the farm's summed logit, summed over bands (logit units)"
    return "contribution to the farm's summed logit, summed over the bands (logit units)"


def is_signed(method: str) -> bool:
    """Whether a method's aggregate map has a meaningful sign (unknown methods: yes)."""
    spec = METHODS.get(method)
    return True if spec is None else spec.signed


def _outlines(p: PatchData, target: np.ndarray | None) -> list[images.Outline]:
    cues = [images.Outline(c.mask, name) for name, c in p.cues.items() if c.mask is not None]
    return [
        *cues,
        images.Outline(p.predicted, "prediction"),
        *([images.Outline(target, "target")] if target is not None else []),
    ]


def card_views(
    p: PatchData,
    target: np.ndarray | None,
    maps: Sequence[tuple[str, np.ndarray]],
    focus: str,
) -> CardViews:
    """The pictures of a farm card.

    Args:
        p: The patch shown.
        target: ``(H, W)`` bool farm mask on it (``None``: not drawn).
        maps: ``(method, (H, W) aggregate map)`` of the farm on this patch.
        focus: The method of the card's verdict (shown large with a colour bar); the first
            map when it has none.
    """
    rgb = images.rgb_composite(p.image, p.bands)
    lines = _outlines(p, target)
    side = max(rgb.shape[:2])
    big, small = max(1, round(BIG_PX / side)), max(1, round(SMALL_PX / side))
    plain = Figure(
        "true colour (B04 B03 B02)", images.jpeg_uri(images.view(rgb, outlines=lines, factor=big))
    )
    ordered = sorted(maps, key=lambda m: m[0] != focus)
    main, bar, others = None, None, []
    for i, (method, values) in enumerate(ordered):
        signed, limit = is_signed(method), ramp_limit(values)
        if i == 0:
            pic = images.view(rgb, outlines=lines, attribution=(values, signed, limit), factor=big)
            main = Figure(f"{method} over true colour", images.jpeg_uri(pic))
            low = -limit if signed else 0.0
            bar = ColourBar(images.colourbar_css(signed), low, limit, units(method), method)
        else:
            thumb = images.view(
                rgb, outlines=lines, attribution=(values, signed, limit), factor=small
            )
            sign = "±" if signed else "0-"
            others.append(Figure(f"{method} ({sign}{limit:.2g})", images.jpeg_uri(thumb)))
    return CardViews(plain, main, bar, others)


def focus_method(farm: Mapping[str, Any]) -> str:
    """The method behind a farm's verdict: that of its worst cue (``""`` without one)."""
    cue = farm.get("worst_cue") or ""
    return str(farm.get(f"{cue}_method") or "") if cue else ""


def verdict_lines(rows: pd.DataFrame, audit: AuditConfig) -> tuple[list[tuple[str, str, str]], str]:
    """Per cue present: ``(cue, verdict, the rule in words)``, most alarming first; and one
    line for the cues that are absent or not computable."""
    present, missing = [], []
    for row in rows.to_dict(orient="records"):
        verdict = str(row["verdict"])
        if verdict in PRESENT:
            present.append((str(row["cue"]), verdict, verdict_in_words(row, audit)))
        else:
            missing.append(verdict_in_words(row, audit))
    present.sort(key=lambda t: SEVERITY.index(t[1]))  # type: ignore[arg-type]
    return present, "; ".join(missing)


def make_card(
    rank: int,
    farm: Mapping[str, Any],
    rows: pd.DataFrame,
    views: CardViews | None,
    links: Sequence[tuple[str, str]],
    audit: AuditConfig,
) -> Card:
    """The card of one farm.

    Args:
        rank: Its place in the ranking (1 = most alarming).
        farm: Its row of the farm table.
        rows: Its rows of the flag table (one per cue).
        views: Its pictures (``None`` when its patch could not be shown).
        links: ``(label, href relative to report/)`` of its files.
        audit: The audit thresholds (for the verdicts in words).
    """
    kind, tid = str(farm["target"]), str(farm["target_id"])
    lines, missing = verdict_lines(rows, audit)
    return Card(
        anchor=anchor(kind, tid),
        rank=rank,
        title=farm_label(kind, tid),
        verdict=str(farm["verdict"]),
        cue=str(farm.get("worst_cue") or ""),
        lines=lines,
        missing=missing,
        views=views,
        rows=records(rows),
        links=list(links),
        subtitle=f"patches {farm.get('patch_ids') or '–'}",
    )


def farm_label(kind: str, target_id: str) -> str:
    """``label farm w12``, ``predicted farm p3_001``: a farm as the page names it."""
    return f"{kind.replace('_', ' ').removesuffix('s')} {target_id}"


def ranking_row(rank: int, farm: Mapping[str, Any]) -> dict[str, Any]:
    """A row of the ranking table (:data:`pipeline.report.html.RANK_TABLE`): the farm, its
    worst verdict and the numbers of the cue behind it (NaN without one)."""
    kind, tid, cue = str(farm["target"]), str(farm["target_id"]), str(farm.get("worst_cue") or "")
    numbers = ("enrichment", "effect", "logit_change", "placebo_logit_change")
    row: dict[str, Any] = {
        "rank": rank,
        "farm": farm_label(kind, tid),
        "anchor": anchor(kind, tid),
        "verdict": farm["verdict"],
        "cue": cue,
    }
    for name in numbers:
        value = float(farm[f"{cue}_{name}"]) if cue else float("nan")
        row[name] = value if np.isfinite(value) else None
    return row


def _farms(n: int) -> str:
    return f"{n} farm" if n == 1 else f"{n} farms"


def answer(farms: pd.DataFrame) -> str:
    """The page's one-sentence answer: on which cues the model leans, for how many farms.

    Counted per cue over the farms that have the cue nearby (its verdict is one of
    :data:`PRESENT`); "leans" means confirmed by removing the cue.
    """
    if farms.empty:
        return "No farm was audited: the audit found no farm target to explain."
    cues = cues_of(farms)
    leaning, tested = [], []
    for cue in cues:
        verdicts = farms[f"{cue}_verdict"]
        near = int(verdicts.isin(PRESENT).sum())
        confirmed = int((verdicts == "confirmed").sum())
        tested += [cue] if near else []
        if confirmed:
            leaning.append(f"on {cue} for {confirmed} of the {_farms(near)} that have {cue} nearby")
    unconfirmed = int((farms["verdict"] == "unconfirmed").sum())
    if leaning:
        text = "The model leans " + " and ".join(leaning) + " (confirmed by removing it)."
        if unconfirmed:
            text += (
                f" Attribution also pointed at a cue on {_farms(unconfirmed)} more, which "
                "removing the cue did not confirm."
            )
        return text
    flagged = (
        f"attribution pointed at a cue on {_farms(unconfirmed)}, but removing the cue moved "
        "none of them."
        if unconfirmed
        else "attribution flagged no farm."
    )
    return (
        f"The model did not lean on the cues tested here ({', '.join(tested or cues)}): "
        f"{flagged} See docs/shortcut-experiment.md for what a confirmed shortcut looks like."
    )


def summary_numbers(farms: pd.DataFrame, flags: pd.DataFrame, n_patches: int) -> dict[str, Any]:
    """Headline counts: farms, flagged, confirmed, patches, and per cue (:func:`run_summary`)."""
    if farms.empty:
        return {"targets": 0, "flagged": 0, "confirmed": 0, "patches": n_patches, "per_cue": {}}
    return {
        "targets": len(farms),
        "flagged": int(farms["verdict"].isin(["confirmed", "unconfirmed"]).sum()),
        "confirmed": int((farms["verdict"] == "confirmed").sum()),
        "patches": n_patches,
        "per_cue": run_summary(flags),
    }
