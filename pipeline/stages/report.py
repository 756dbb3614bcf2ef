"""report stage: the analysts' self-contained HTML page.

Reads the audit's flags (and its other tables), the attribution index and rasters, the
patches, the model's scores and training log, and the run's farm layers (labels, predictions,
the map's farms when there is a map). Writes ``report/index.html``: it opens with no network
(CSS, JS and pictures inline). The QGIS styles of the run's files are written beside each file
by the stage that writes it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pipeline.audit.flags import farm_table
from pipeline.audit.patches import read_farm_polygons
from pipeline.config import RunConfig
from pipeline.errors import PipelineError
from pipeline.io import write_text
from pipeline.paths import RunPaths
from pipeline.report.cards import (
    answer,
    capped_notes,
    card_order,
    ranking_row,
    records,
    summary_numbers,
)
from pipeline.report.html import ReportData, render
from pipeline.report.inputs import (
    read_attribution_rows,
    read_csv,
    read_flags,
    read_json,
    read_triage,
)
from pipeline.report.plots import build_plots
from pipeline.report.sections import (
    Pictures,
    farm_cards,
    model_quality,
    overview_figure,
    timeline_view,
)
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Render ``report/index.html`` from the audit's outputs and the run's files."""
    flags = read_flags(paths, cfg.run.name)
    farms = farm_table(flags)
    cues = read_csv(paths.cues)
    sanity = read_json(paths.sanity, {"skipped": "sanity.json not found"})
    curves = read_json(paths.faithfulness_curves, [])
    polygons = read_farm_polygons(paths, set(flags["target"]) if not flags.empty else set())
    ordered = card_order(farms)
    shown = ordered[: cfg.report.max_cards]
    pictures = Pictures(cfg, paths, read_attribution_rows(paths), polygons)
    try:
        overview_map, overview_note = overview_figure(paths, farms, polygons, ordered)
    except (PipelineError, OSError, ValueError) as err:
        log.warning("the overview map could not be drawn: %s", err)
        overview_map, overview_note = None, f"The overview map could not be drawn: {err}"
    run_flags = read_csv(paths.run_flags)
    n_patches = int(cues["patch_id"].nunique()) if not cues.empty else 0
    data = ReportData(
        title=cfg.report.title,
        run=cfg.run.name,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        answer=answer(farms),
        summary=summary_numbers(farms, flags, n_patches),
        quality=model_quality(paths, cfg),
        overview=overview_map,
        overview_note=overview_note,
        ranking=[ranking_row(rank, farm) for rank, farm in enumerate(shown, start=1)],
        cards=farm_cards(shown, flags, pictures, cfg),
        flags=records(flags),
        run_flags=records(run_flags),
        sanity=sanity,
        faithfulness=records(read_csv(paths.faithfulness)),
        cues=records(cues),
        plots=build_plots(run_flags, sanity, curves, cfg.audit.enrichment_threshold),
        notes=capped_notes(len(farms), cfg.report.max_cards),
        triage=read_triage(paths, cfg.triage.report_rows),
        timeline=timeline_view(paths),
        concepts=read_json(paths.concepts, {}),
    )
    write_text(paths.report, render(data))
    summary = {
        "cards": len(data.cards),
        "farm_targets": data.summary["targets"],
        "flagged": data.summary["flagged"],
        "confirmed": data.summary["confirmed"],
        "answer": data.answer,
        "overview": overview_map is not None,
        "timeline": data.timeline is not None,
        "bytes": paths.report.stat().st_size,
    }
    return StageOutput([paths.report], summary)
