"""Farm cards, the answer, model quality, the overview map's pieces and the plots, on small data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from rasterio.crs import CRS

from pipeline.audit.cues import CueMask
from pipeline.audit.flags import farm_table
from pipeline.audit.patches import PatchData
from pipeline.bands import BANDS
from pipeline.geo.raster import Grid
from pipeline.report import images
from pipeline.report.cards import (
    answer,
    attribution_maps,
    capped_notes,
    card_order,
    card_patches,
    card_views,
    ranking_row,
    records,
    units,
)
from pipeline.report.html import RANK_TABLE
from pipeline.report.overview import mosaic, nice_length, overview_grid
from pipeline.report.plots import build_plots, curves_plot, randomization_plot
from pipeline.report.quality import epoch_curves, quality_rows, training_curve_png


def _flags() -> pd.DataFrame:
    rows = [
        ("w1", "snow", "not_flagged", 1.2, None, ["p1"]),
        ("w1", "water", "cue_absent", np.nan, None, ["p1"]),
        ("w2", "snow", "unconfirmed", 3.0, ["p3", "p2"], ["p2", "p3"]),
        ("w3", "snow", "confirmed", 2.5, ["p4"], ["p4"]),
        ("w4", "snow", "unconfirmed", 8.0, None, ["p5"]),
    ]
    return pd.DataFrame(
        {
            "target": "label_farms",
            "target_id": [r[0] for r in rows],
            "cue": [r[1] for r in rows],
            "method": "integrated_gradients",
            "verdict": [r[2] for r in rows],
            "enrichment": [r[3] for r in rows],
            "effect": 0.1,
            "logit_change": -2.0,
            "placebo_logit_change": 0.01,
            "cf_patch": [json.dumps(r[4]) if r[4] else np.nan for r in rows],
            "patch_ids": [json.dumps(r[5]) for r in rows],
        }
    )


def test_farms_most_alarming_first_then_by_enrichment() -> None:
    order = [f["target_id"] for f in card_order(farm_table(_flags()))]
    assert order == ["w3", "w4", "w2", "w1"]  # confirmed; unconfirmed 8 > 3; not flagged
    assert card_order(pd.DataFrame()) == []
    row = ranking_row(1, card_order(farm_table(_flags()))[0])
    assert set(RANK_TABLE) <= set(row) and row["anchor"] == "card-label-farms-w3"
    assert (row["cue"], row["enrichment"], row["logit_change"]) == ("snow", 2.5, -2.0)


def test_the_answer_counts_confirmed_farms_among_those_with_the_cue_nearby() -> None:
    farms = farm_table(_flags())
    assert answer(farms) == (
        "The model leans on snow for 1 of the 4 farms that have snow nearby (confirmed by "
        "removing it). Attribution also pointed at a cue on 2 farms more, which removing the "
        "cue did not confirm."
    )
    calm = farm_table(_flags().assign(verdict="not_flagged"))
    assert answer(calm).startswith(
        "The model did not lean on the cues tested here (snow, water): attribution flagged no farm."
    )
    assert "docs/shortcut-experiment.md" in answer(calm)


def test_a_card_shows_the_counterfactuals_main_patch() -> None:
    rows = dict(iter(_flags().groupby("target_id")))
    assert card_patches(rows["w2"]) == ("p3", ["p2", "p3"])
    assert card_patches(rows["w1"]) == ("p1", ["p1"])
    assert capped_notes(4, 4) == [] and "24 most alarming of 40" in capped_notes(40, 24)[0]
    assert records(pd.DataFrame({"x": [1.0, np.inf]})) == [{"x": 1.0}, {"x": None}]


def _patch() -> PatchData:
    grid = Grid(CRS.from_epsg(32618), Affine(10, 0, 400_000, 0, -10, 4_000_000), 32, 32)
    image = np.full((len(BANDS), 32, 32), 1000, np.uint16)
    snow = np.zeros((32, 32), bool)
    snow[2:8, 2:8] = True
    farm = np.zeros((32, 32), bool)
    farm[10:20, 10:20] = True
    cues = {"snow": CueMask("snow", snow, "scl", "")}
    return PatchData("p1", image, BANDS, grid, farm | True, farm, farm, cues)


def test_card_views_overlay_the_verdicts_method_on_true_colour() -> None:
    values = np.zeros((32, 32), np.float32)
    values[2:8, 2:8] = 5.0  # attribution on the snow
    maps = [("saliency", np.abs(values)), ("integrated_gradients", values)]
    farm = _patch().labels
    views = card_views(_patch(), farm, maps, focus="integrated_gradients")
    assert views.main.caption == "integrated_gradients over true colour"
    assert views.colourbar.low == -views.colourbar.high and views.colourbar.high == 5.0
    assert [f.caption for f in views.others] == ["saliency (0-5)"]
    assert all(f.uri.startswith("data:image/jpeg;base64,") for f in (views.plain, views.main))
    assert "logit per unit" in units("saliency") and "logit units" in units("input_x_gradient")
    index = pd.DataFrame(
        {
            "patch_id": ["p1", "p1", "p2"],
            "target": ["label_farms"] * 3,
            "target_id": ["w1", "w1", "w1"],
            "method": ["saliency", "integrated_gradients", "saliency"],
            "path": ["a.tif", "b.tif", "c.tif"],
        }
    )
    assert attribution_maps(index, "p1", ("label_farms", "w1")) == [
        ("integrated_gradients", "b.tif"),
        ("saliency", "a.tif"),
    ]


def test_views_draw_outlines_and_heat_where_the_attribution_is() -> None:
    rgb = np.full((16, 16, 3), 100, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    values = np.zeros((16, 16))
    values[0:3, 0:3] = 1.0
    out = images.view(rgb, outlines=[images.Outline(mask, "target")], attribution=(values, True, 1))
    assert out.shape == (32, 32, 3)
    assert tuple(out[8, 8]) == images.COLOURS["target"]  # the outline, enlarged x2
    assert tuple(out[16, 16]) == (80, 80, 80)  # inside: ground dimmed, no heat
    assert int(out[0, 0, 0]) > int(out[0, 0, 2]) + 40  # positive attribution: red
    assert images.colourbar_css(True).startswith("linear-gradient(to right, rgb(")


def test_quality_rows_and_the_training_curve() -> None:
    metrics = {
        "pixel": {"val": {"iou": 0.8}, "train": {"iou": 0.6, "f1": 0.7}},
        "object": {"train": {"precision": 0.5, "recall": 1.0, "matched": 3, "n_truth": 3}},
    }
    rows = quality_rows(metrics)
    assert [r["split"] for r in rows] == ["train", "val"]
    assert rows[0]["farms"] == "3 / 3" and rows[1]["farms"] == "–"
    log = pd.DataFrame(
        {
            "epoch": [0, 0, 1, 1],
            "train/loss_epoch": [np.nan, 1.0, np.nan, 0.5],
            "val/loss": [np.nan, 0.9, np.nan, 0.4],
            "val/iou": [np.nan, 0.1, np.nan, 0.6],
        }
    )
    curves = epoch_curves(log)
    assert curves[["train_loss", "val_loss", "val_iou"]].to_numpy().tolist() == [
        [1.0, 0.9, 0.1],
        [0.5, 0.4, 0.6],
    ]
    assert training_curve_png(curves)[:4] == b"\x89PNG"
    assert training_curve_png(epoch_curves(pd.DataFrame())) is None


def test_overview_grid_mosaic_and_scale_bar() -> None:
    grid = overview_grid((-75.7, 37.6, -75.5, 37.8), width_px=200)
    assert grid.width == 200
    dx, dy = grid.transform.a, -grid.transform.e
    assert dy == pytest.approx(dx * math.cos(math.radians(37.7)))  # square on the ground
    utm = Grid(CRS.from_epsg(32618), Affine(100, 0, 440_000, 0, -100, 4_170_000), 40, 40)
    red = np.zeros((3, 40, 40), np.uint16)
    red[0] = 3000
    canvas = mosaic([(red, utm)], grid)
    covered = np.isfinite(canvas).all(axis=0)
    assert 0 < covered.sum() < covered.size
    assert np.allclose(canvas[0][covered], 3000) and np.allclose(canvas[1][covered], 0)
    assert [nice_length(m) for m in (19_000, 4_000, 900)] == [2000, 500, 100]


def test_plots_only_when_there_is_something_to_plot() -> None:
    assert build_plots(pd.DataFrame(), {"skipped": "x"}, [], 2.0) == []
    run_flags = pd.DataFrame({"method": ["s"], "cue": ["snow"], "target": ["t"], "enrichment": [3]})
    sanity = {"model_randomization": {"steps": ["a"], "methods": {"s": {"spearman": [0.1]}}}}
    curves = [{"patch_id": "p", "method": "s", "fractions": [0, 1], "deletion": [1, 0]}]
    curves[0]["insertion"] = [0, 1]
    assert [f.caption for f in build_plots(run_flags, sanity, curves, 2.0)] == [
        "enrichment per run",
        "model randomization",
        "deletion and insertion",
    ]
    assert randomization_plot({}) is None and curves_plot([]) is None
