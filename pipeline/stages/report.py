"""report stage: the analysts' self-contained HTML page and QGIS styles.

Reads the audit outputs (flags, run flags, sanity, faithfulness, cues), the attribution index
and rasters, and the patches. Writes ``report/index.html`` (opens with no network: CSS, JS and
PNGs inline), ``report/attribution.qml`` (the attribution COGs' aggregate band) and
``report/flags.qml`` (``audit/flags.gpkg`` by verdict).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import MissingArtifactError
from pipeline.geo.raster import read_raster
from pipeline.io import write_text
from pipeline.paths import RunPaths
from pipeline.report import images as img
from pipeline.report.html import SEVERITY, Card, Figure, ReportData, render
from pipeline.report.qml import attribution_qml, flags_qml
from pipeline.stages.audit import FARM_TARGETS, load_patch, read_farm_polygons, target_mask
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)

#: Verdicts from most to least alarming (a card shows its most alarming cue).
VERDICT_RANK = SEVERITY


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, dtype={"patch_id": str, "target_id": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def card_rank(verdicts: list[str]) -> str:
    """The most alarming of a target's verdicts."""
    known = [v for v in verdicts if v in VERDICT_RANK]
    return min(known, key=VERDICT_RANK.index) if known else "not_computable"


def build_card(
    key: tuple[str, str],
    rows: pd.DataFrame,
    paths: RunPaths,
    cfg: RunConfig,
    index: pd.DataFrame,
    polygons: dict[tuple[str, str], Any],
    patch_cache: dict[str, Any],
) -> tuple[Card, float]:
    """One farm card and the largest |attribution| shown (for the QGIS colour ramp)."""
    kind, tid = key
    verdict = card_rank(rows["verdict"].astype(str).tolist())
    cf_patches = [json.loads(v) for v in rows["cf_patch"].dropna().astype(str)]
    patch_ids = json.loads(str(rows["patch_ids"].iloc[0])) if "patch_ids" in rows else []
    shown = [*(c[0] for c in cf_patches if c), *patch_ids]
    pid = shown[0] if shown else ""  # the counterfactual's main patch, else the first
    figures: list[Figure] = []
    limit = 0.0
    if pid and paths.image(pid).is_file():
        if pid not in patch_cache:
            patch_cache[pid] = load_patch(paths, cfg, pid, {})
        p = patch_cache[pid]
        rgb = img.rgb_composite(p.image, p.bands)
        row0 = pd.Series({"target": kind, "target_id": tid})
        tmask = target_mask(row0, p, polygons)
        figures += [
            Figure("RGB", img.data_uri(img.png(rgb))),
            Figure(
                "label (yellow) / target",
                img.data_uri(img.png(img.overlay(rgb, {"label": p.labels, "target": tmask}))),
            ),
        ]
        figures.append(
            Figure(
                "prediction", img.data_uri(img.png(img.overlay(rgb, {"prediction": p.predicted})))
            )
        )
        cues = {n: c.mask for n, c in p.cues.items() if c.mask is not None}
        figures.append(
            Figure(
                "cues: " + ", ".join(cues) if cues else "cues: none computable",
                img.data_uri(img.png(img.overlay(rgb, cues))),
            )
        )
        sel = index[
            (index["patch_id"] == pid) & (index["target"] == kind) & (index["target_id"] == tid)
        ]
        for _, arow in sel.sort_values("method").iterrows():
            array, _, _ = read_raster(paths.root / str(arow["path"]))
            agg = array[-1]
            rgbmap, scale = img.attribution_rgb(agg)
            limit = max(limit, scale)
            figures.append(
                Figure(f"{arow['method']} (±{scale:.2g})", img.data_uri(img.png(rgbmap)))
            )
    subtitle = f"patch {pid or '–'} · patches {', '.join(patch_ids) or '–'}"
    return Card(f"{kind} {tid}", verdict, subtitle, figures, _records(rows)), limit


def summary_numbers(flags: pd.DataFrame, n_patches: int) -> dict[str, Any]:
    """Headline counts for the summary tiles."""
    from pipeline.audit.flags import run_summary

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


def build_plots(
    run_flags: pd.DataFrame, sanity: dict[str, Any], curves: list[dict[str, Any]], threshold: float
) -> list[Figure]:
    """Enrichment per method/cue, sanity cascade, deletion and insertion curves."""
    plots: list[Figure] = []
    if not run_flags.empty and "enrichment" in run_flags:
        labels = [f"{r.method}/{r.cue}/{r.target}" for r in run_flags.itertuples()]
        plots.append(
            Figure(
                "enrichment per run",
                img.data_uri(
                    img.bar_plot(
                        labels,
                        run_flags["enrichment"].astype(float).tolist(),
                        title="Enrichment of attribution on cues (pooled over patches)",
                        ylabel="enrichment",
                        line=threshold,
                    )
                ),
            )
        )
    mr = sanity.get("model_randomization", {})
    if mr.get("methods"):
        series = {m: v["spearman"] for m, v in mr["methods"].items()}
        plots.append(
            Figure(
                "model randomization",
                img.data_uri(
                    img.line_plot(
                        series,
                        mr["steps"],
                        title="Model randomization: rank correlation with original",
                        xlabel="re-initialized down to",
                        ylabel="Spearman |maps|",
                        hline=sanity.get("max_similarity"),
                    )
                ),
            )
        )
    if curves:
        first = curves[0]["patch_id"]
        sel = [c for c in curves if c["patch_id"] == first]
        series = {f"{c['method']} deletion": c["deletion"] for c in sel}
        series |= {f"{c['method']} insertion": c["insertion"] for c in sel}
        plots.append(
            Figure(
                "deletion and insertion",
                img.data_uri(
                    img.line_plot(
                        series,
                        sel[0]["fractions"],
                        title=f"Deletion / insertion curves ({first})",
                        xlabel="fraction of superpixels",
                        ylabel="target mean probability",
                    )
                ),
            )
        )
    return plots


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Render ``report/index.html`` and the QGIS styles from the audit's outputs."""
    audit = paths.stage_dir("audit")
    flags_path = audit / "flags.csv"
    if not flags_path.is_file():
        raise MissingArtifactError("the audit's flags", flags_path, f"audit RUN={cfg.run.name}")
    flags = _read_csv(flags_path)
    run_flags = _read_csv(audit / "run_flags.csv")
    cues = _read_csv(audit / "cues.csv")
    faith = _read_csv(audit / "faithfulness.csv")
    sanity = _json(audit / "sanity.json", {"skipped": "sanity.json not found"})
    curves = _json(audit / "faithfulness_curves.json", [])
    index = _read_csv(paths.attribution_index)
    if not index.empty:
        index["target_id"] = index["target_id"].fillna("").astype(str)
        # skipped rows (budgets, empty targets) have no raster; they stay in the skip table
        index = index[(index["status"] == "ok") & index["path"].notna()]
    if not flags.empty:
        flags["target_id"] = flags["target_id"].fillna("").astype(str)

    polygons = read_farm_polygons(paths, set(flags["target"]) if not flags.empty else set())
    cards: list[tuple[Card, float]] = []
    patch_cache: dict[str, Any] = {}
    if not flags.empty:
        order = sorted(
            flags.groupby(["target", "target_id"]),
            key=lambda kv: (
                VERDICT_RANK.index(card_rank(kv[1]["verdict"].astype(str).tolist())),
                -float(np.nan_to_num(kv[1]["enrichment"].astype(float).max(), nan=0.0)),
            ),
        )
        for key, rows in order[: cfg.report.max_cards]:
            cards.append(build_card(key, rows, paths, cfg, index, polygons, patch_cache))
    notes = []
    if (
        not flags.empty
        and len({(k, t) for k, t in zip(flags["target"], flags["target_id"], strict=True)})
        > cfg.report.max_cards
    ):
        notes.append(
            f"Only the {cfg.report.max_cards} most alarming farm cards are shown "
            "(report.max_cards); flags.csv has them all."
        )
    n_patches = int(cues["patch_id"].nunique()) if not cues.empty else 0
    data = ReportData(
        title=cfg.report.title,
        run=cfg.run.name,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary_numbers(flags, n_patches),
        flags=_records(flags),
        run_flags=_records(run_flags),
        cards=[c for c, _ in cards],
        sanity=sanity,
        faithfulness=_records(faith),
        cues=_records(cues),
        plots=build_plots(run_flags, sanity, curves, cfg.audit.enrichment_threshold),
        notes=notes,
    )
    limit = max([lim for _, lim in cards if lim > 0], default=1.0)
    out = paths.stage_dir("report")
    outputs = [
        write_text(paths.report, render(data)),
        write_text(out / "attribution.qml", attribution_qml(len(BANDS) + 1, limit)),
        write_text(out / "flags.qml", flags_qml()),
    ]
    return StageOutput(
        outputs,
        {
            "cards": len(cards),
            "farm_targets": data.summary["targets"],
            "flagged": data.summary["flagged"],
            "confirmed": data.summary["confirmed"],
            "bytes": paths.report.stat().st_size,
            "object_targets": sorted(FARM_TARGETS),
        },
    )
