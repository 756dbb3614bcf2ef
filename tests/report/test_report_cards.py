"""Farm cards, headline numbers, plots and table columns of the report, on small frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.audit.flags import FLAG_COLUMNS
from pipeline.report.cards import (
    attribution_figures,
    attribution_maps,
    capped_notes,
    card_order,
    card_patches,
    card_rank,
    colour_limit,
    make_card,
    records,
    summary_numbers,
)
from pipeline.report.html import CARD_TABLE, FLAG_TABLE, PER_CUE_TABLE, shown
from pipeline.report.plots import build_plots, curves_plot, enrichment_plot, randomization_plot


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
            "verdict": [r[2] for r in rows],
            "enrichment": [r[3] for r in rows],
            "cf_patch": [json.dumps(r[4]) if r[4] else np.nan for r in rows],
            "patch_ids": [json.dumps(r[5]) for r in rows],
        }
    )


def test_cards_most_alarming_first_then_by_enrichment() -> None:
    order = card_order(_flags())
    assert [key for key, _ in order] == [
        ("label_farms", "w3"),  # confirmed
        ("label_farms", "w4"),  # unconfirmed, enrichment 8
        ("label_farms", "w2"),  # unconfirmed, enrichment 3
        ("label_farms", "w1"),  # its worst verdict is not_flagged
    ]
    assert card_rank(["cue_absent", "not_flagged"]) == "not_flagged"
    assert card_rank(["?"]) == "not_computable"
    assert card_order(pd.DataFrame()) == []


def test_a_card_shows_the_counterfactuals_main_patch() -> None:
    rows = dict(card_order(_flags()))
    assert card_patches(rows[("label_farms", "w2")]) == ("p3", ["p2", "p3"])
    assert card_patches(rows[("label_farms", "w1")]) == ("p1", ["p1"])
    card = make_card(("label_farms", "w1"), rows[("label_farms", "w1")], "p1", ["p1"], [])
    assert card.title == "label_farms w1" and card.verdict == "not_flagged"
    assert card.subtitle == "patch p1 · patches p1"
    assert card.rows[1]["enrichment"] is None  # NaN is shown as a dash, not "nan"
    assert make_card(("k", "t"), rows[("label_farms", "w1")], "", [], []).subtitle == (
        "patch – · patches –"
    )


def test_capped_notes_and_summary_numbers() -> None:
    flags = _flags()
    assert capped_notes(flags, 4) == [] and capped_notes(pd.DataFrame(), 0) == []
    assert "Only the 3 most alarming" in capped_notes(flags, 3)[0]
    numbers = summary_numbers(flags, n_patches=5)
    assert {k: numbers[k] for k in ("targets", "flagged", "confirmed", "patches")} == {
        "targets": 4,
        "flagged": 3,
        "confirmed": 1,
        "patches": 5,
    }
    assert numbers["per_cue"]["snow"]["confirmed"] == 1
    assert summary_numbers(pd.DataFrame(), 2)["targets"] == 0


def test_attribution_maps_and_figures() -> None:
    index = pd.DataFrame(
        {
            "patch_id": ["p1", "p1", "p1", "p2"],
            "target": ["label_farms"] * 4,
            "target_id": ["w1", "w1", "w2", "w1"],
            "method": ["saliency", "integrated_gradients", "saliency", "saliency"],
            "path": ["a.tif", "b.tif", "c.tif", "d.tif"],
        }
    )
    maps = attribution_maps(index, "p1", ("label_farms", "w1"))
    assert maps == [("integrated_gradients", "b.tif"), ("saliency", "a.tif")]
    ramp = np.linspace(-2.0, 2.0, 100).reshape(10, 10)
    figures, limit = attribution_figures([("saliency", ramp), ("ig", ramp / 2)])
    assert [f.caption.split(" ")[0] for f in figures] == ["saliency", "ig"]
    assert limit == pytest.approx(np.percentile(np.abs(ramp), 99))
    assert figures[0].uri.startswith("data:image/png;base64,")
    assert attribution_figures([]) == ([], 0.0)
    assert colour_limit([0.0, 0.5, 2.0]) == 2.0 and colour_limit([0.0]) == 1.0


def test_plots_only_when_there_is_something_to_plot() -> None:
    assert build_plots(pd.DataFrame(), {"skipped": "x"}, [], 2.0) == []
    assert enrichment_plot(pd.DataFrame({"target": ["t"]}), 2.0) is None
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


def test_table_columns_come_from_the_tables_writers() -> None:
    assert set(FLAG_TABLE) <= set(FLAG_COLUMNS) and set(CARD_TABLE) <= set(FLAG_COLUMNS)
    assert PER_CUE_TABLE[0] == "cue"
    assert shown(("a", "b", "c"), "c", "a") == ("c", "a")
    with pytest.raises(ValueError, match=r"\['z'\] are not in the table"):
        shown(("a", "b"), "a", "z")
    assert records(pd.DataFrame({"x": [1.0, np.inf]})) == [{"x": 1.0}, {"x": None}]
