"""Model quality for the report: scores per split and the training curve.

:func:`quality_rows` turns ``predict/metrics.json`` into one row per split
(:data:`QUALITY_COLUMNS`); :func:`epoch_curves` reduces Lightning's CSV log
(``train/logs/csv/version_0/metrics.csv``, one row per logging step) to one row per epoch, and
:func:`training_curve_png` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.report.images import figure_png
from pipeline.tables import Columns

#: Splits in the order the report lists them.
SPLITS = ("train", "val", "test")

#: Columns of the model-quality table.
QUALITY_COLUMNS = Columns(
    ("split", "train (fitted on), val (chose the checkpoint and threshold), test (held out)"),
    ("pixel_iou", "farm pixels: intersection over union of predicted and labelled (0-1)"),
    ("pixel_f1", "farm pixels: F1 score (0-1)"),
    ("pixel_precision", "farm pixels: share of predicted farm pixels that are labelled farm"),
    ("pixel_recall", "farm pixels: share of labelled farm pixels predicted"),
    (
        "object_precision",
        "farms: share of predicted farm polygons that match a labelled farm (IoU >= match_iou)",
    ),
    ("object_recall", "farms: share of labelled farms matched by a prediction"),
    ("farms", "labelled farms in the split (matched / labelled)"),
)


def quality_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per split of ``predict/metrics.json`` (:data:`QUALITY_COLUMNS`); ``[]`` without
    pixel metrics."""
    pixel, objects = metrics.get("pixel", {}), metrics.get("object", {})
    rows = []
    for split in [s for s in SPLITS if s in pixel] + [s for s in pixel if s not in SPLITS]:
        p, o = pixel[split], objects.get(split, {})
        rows.append(
            {
                "split": split,
                "pixel_iou": p.get("iou"),
                "pixel_f1": p.get("f1"),
                "pixel_precision": p.get("precision"),
                "pixel_recall": p.get("recall"),
                "object_precision": o.get("precision"),
                "object_recall": o.get("recall"),
                "farms": f"{o.get('matched', '–')} / {o.get('n_truth', '–')}" if o else "–",
            }
        )
    return rows


def epoch_curves(log: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: ``train_loss``, ``val_loss``, ``val_iou`` (NaN where not logged).

    Args:
        log: Lightning's CSV log: an ``epoch`` column and metric columns such as
            ``train/loss_epoch``, ``val/loss``, ``val/iou`` (one row per logging step).
    """
    if log.empty or "epoch" not in log:
        return pd.DataFrame(columns=["epoch", "train_loss", "val_loss", "val_iou"])
    names = {"train/loss_epoch": "train_loss", "val/loss": "val_loss", "val/iou": "val_iou"}
    present = {k: v for k, v in names.items() if k in log}
    per_epoch = log.groupby("epoch")[list(present)].mean().rename(columns=present)
    out = per_epoch.reindex(columns=list(names.values())).reset_index()
    return out.dropna(how="all", subset=["train_loss", "val_loss", "val_iou"])


def training_curve_png(curves: pd.DataFrame) -> bytes | None:
    """Train and validation loss (left axis) and validation IoU (right axis) per epoch, with
    the epoch of the lowest validation loss (the exported checkpoint) marked; ``None`` when
    there is nothing to draw."""
    if curves.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    epochs = curves["epoch"].to_numpy()
    ax.plot(epochs, curves["train_loss"], color="#1f77b4", marker="o", ms=3, label="train loss")
    ax.plot(epochs, curves["val_loss"], color="#ff7f0e", marker="o", ms=3, label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (BCE + Dice)")
    iou_ax = ax.twinx()
    iou_ax.plot(epochs, curves["val_iou"], color="#2ca02c", marker="s", ms=3, label="val IoU")
    iou_ax.set_ylabel("val IoU")
    iou_ax.set_ylim(0, 1)
    val = curves["val_loss"].to_numpy(dtype=float)
    if np.isfinite(val).any():
        best = epochs[int(np.nanargmin(val))]
        ax.axvline(best, color="#555", ls="--", lw=1, label=f"kept: epoch {best}")
    lines = ax.get_legend_handles_labels()
    more = iou_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return figure_png(fig, dpi=100)
