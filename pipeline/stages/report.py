"""report stage: the analysts' self-contained HTML page and QGIS styles.

Reads the audit outputs (flags, run flags, sanity, faithfulness, cues), the attribution index
and rasters, and the patches. Writes ``report/index.html`` (opens with no network: CSS, JS and
PNGs inline), ``report/attribution.qml`` (the attribution COGs' aggregate band) and
``report/flags.qml`` (``audit/flags.gpkg`` by verdict).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.audit.patches import (
    FARM_TARGETS,
    PatchData,
    Polygons,
    load_patch,
    read_attribution,
    read_farm_polygons,
    target_mask,
)
from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import MissingArtifactError
from pipeline.io import write_text
from pipeline.paths import RunPaths
from pipeline.report.cards import (
    attribution_figures,
    attribution_maps,
    capped_notes,
    card_order,
    card_patches,
    colour_limit,
    make_card,
    patch_figures,
    records,
    summary_numbers,
)
from pipeline.report.html import Card, Figure, ReportData, render
from pipeline.report.plots import build_plots
from pipeline.report.qml import attribution_qml, flags_qml
from pipeline.stages.base import StageOutput


def _read_csv(path: Path) -> pd.DataFrame:
    """A table, empty when the file is missing or empty; ids read as text."""
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path, dtype={"patch_id": str, "target_id": str})
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def _read_index(paths: RunPaths) -> pd.DataFrame:
    """The attribution index rows that have a raster (skipped rows have none)."""
    index = _read_csv(paths.attribution_index)
    if index.empty:
        return index
    index["target_id"] = index["target_id"].fillna("").astype(str)
    return index[(index["status"] == "ok") & index["path"].notna()]


def _read_flags(paths: RunPaths, run: str) -> pd.DataFrame:
    """The audit's flag table (``target_id`` ``""`` when none).

    Raises:
        MissingArtifactError: the audit has not run.
    """
    if not paths.flags.is_file():
        raise MissingArtifactError("the audit's flags", paths.flags, f"audit RUN={run}")
    flags = _read_csv(paths.flags)
    if not flags.empty:
        flags["target_id"] = flags["target_id"].fillna("").astype(str)
    return flags


@dataclass
class Pictures:
    """Reads what the farm cards show: each patch once, and each farm's attribution maps."""

    cfg: RunConfig
    paths: RunPaths
    index: pd.DataFrame
    polygons: Polygons
    patches: dict[str, PatchData] = field(default_factory=dict)

    def of(self, pid: str, key: tuple[str, str]) -> tuple[list[Figure], float]:
        """Figures of farm target ``key`` on patch ``pid`` and their largest colour scale."""
        if not pid or not self.paths.image(pid).is_file():
            return [], 0.0
        if pid not in self.patches:
            self.patches[pid] = load_patch(self.paths, self.cfg, pid, {})
        p = self.patches[pid]
        figures = patch_figures(p, target_mask(*key, p, self.polygons))
        maps = [
            (method, read_attribution(self.paths.resolve(path))[1])
            for method, path in attribution_maps(self.index, pid, key)
        ]
        more, limit = attribution_figures(maps)
        return figures + more, limit


def _cards(flags: pd.DataFrame, pictures: Pictures, max_cards: int) -> list[tuple[Card, float]]:
    """The ``max_cards`` most alarming farm cards, each with its largest colour scale."""
    cards = []
    for key, rows in card_order(flags)[:max_cards]:
        pid, patch_ids = card_patches(rows)
        figures, limit = pictures.of(pid, key)
        cards.append((make_card(key, rows, pid, patch_ids, figures), limit))
    return cards


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Render ``report/index.html`` and the QGIS styles from the audit's outputs."""
    flags = _read_flags(paths, cfg.run.name)
    run_flags = _read_csv(paths.run_flags)
    cues = _read_csv(paths.cues)
    sanity = _read_json(paths.sanity, {"skipped": "sanity.json not found"})
    curves = _read_json(paths.faithfulness_curves, [])
    polygons = read_farm_polygons(paths, set(flags["target"]) if not flags.empty else set())

    pictures = Pictures(cfg, paths, _read_index(paths), polygons)
    cards = _cards(flags, pictures, cfg.report.max_cards)
    data = ReportData(
        title=cfg.report.title,
        run=cfg.run.name,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        summary=summary_numbers(flags, int(cues["patch_id"].nunique()) if not cues.empty else 0),
        flags=records(flags),
        run_flags=records(run_flags),
        cards=[card for card, _ in cards],
        sanity=sanity,
        faithfulness=records(_read_csv(paths.faithfulness)),
        cues=records(cues),
        plots=build_plots(run_flags, sanity, curves, cfg.audit.enrichment_threshold),
        notes=capped_notes(flags, cfg.report.max_cards),
    )
    limit = colour_limit([lim for _, lim in cards])
    outputs = [
        write_text(paths.report, render(data)),
        write_text(paths.report_style("attribution"), attribution_qml(len(BANDS) + 1, limit)),
        write_text(paths.report_style("flags"), flags_qml()),
    ]
    summary = {
        "cards": len(cards),
        "farm_targets": data.summary["targets"],
        "flagged": data.summary["flagged"],
        "confirmed": data.summary["confirmed"],
        "bytes": paths.report.stat().st_size,
        "object_targets": sorted(FARM_TARGETS),
    }
    return StageOutput(outputs, summary)
