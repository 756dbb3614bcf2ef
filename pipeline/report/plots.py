"""The report's plots: enrichment per run, the sanity cascade, deletion and insertion curves.

Each takes an audit output already read (``run_flags.csv``, ``sanity.json``,
``faithfulness_curves.json``) and returns a :class:`Figure`, or ``None`` when there is nothing
to plot.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.report import images
from pipeline.report.html import Figure


def enrichment_plot(run_flags: pd.DataFrame, threshold: float) -> Figure | None:
    """Bars of pooled enrichment per method / cue / target kind, with the flag threshold."""
    if run_flags.empty or "enrichment" not in run_flags:
        return None
    labels = [f"{r.method}/{r.cue}/{r.target}" for r in run_flags.itertuples()]
    png = images.bar_plot(
        labels,
        run_flags["enrichment"].astype(float).tolist(),
        title="Enrichment of attribution on cues (pooled over patches)",
        ylabel="enrichment",
        line=threshold,
    )
    return Figure("enrichment per run", images.data_uri(png))


def randomization_plot(sanity: dict[str, Any]) -> Figure | None:
    """Spearman rank correlation per cascade step and method (model randomization)."""
    mr = sanity.get("model_randomization", {})
    if not mr.get("methods"):
        return None
    png = images.line_plot(
        {m: v["spearman"] for m, v in mr["methods"].items()},
        mr["steps"],
        title="Model randomization: rank correlation with original",
        xlabel="re-initialized down to",
        ylabel="Spearman |maps|",
        hline=sanity.get("max_similarity"),
    )
    return Figure("model randomization", images.data_uri(png))


def curves_plot(curves: list[dict[str, Any]]) -> Figure | None:
    """Deletion and insertion curves of every method on the first patch scored."""
    if not curves:
        return None
    first = curves[0]["patch_id"]
    sel = [c for c in curves if c["patch_id"] == first]
    series = {f"{c['method']} deletion": c["deletion"] for c in sel}
    series |= {f"{c['method']} insertion": c["insertion"] for c in sel}
    png = images.line_plot(
        series,
        sel[0]["fractions"],
        title=f"Deletion / insertion curves ({first})",
        xlabel="fraction of superpixels",
        ylabel="target mean probability",
    )
    return Figure("deletion and insertion", images.data_uri(png))


def build_plots(
    run_flags: pd.DataFrame, sanity: dict[str, Any], curves: list[dict[str, Any]], threshold: float
) -> list[Figure]:
    """The plots there is something to plot for, in page order.

    Args:
        run_flags: ``run_flags.csv``.
        sanity: ``sanity.json``.
        curves: ``faithfulness_curves.json``.
        threshold: ``audit.enrichment_threshold`` (a line on the enrichment plot).
    """
    plots = [
        enrichment_plot(run_flags, threshold),
        randomization_plot(sanity),
        curves_plot(curves),
    ]
    return [p for p in plots if p is not None]
