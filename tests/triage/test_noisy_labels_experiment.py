"""The noisy-label experiment's runs and its summary (the runs themselves are too slow here)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_config
from pipeline.experiments.noisy_labels import (
    markdown_table,
    retrain_overrides,
    summarize,
)


def _row(iou: float, found: int, tiles: list[str], ignored: int | None = None) -> dict:
    return {
        "test_iou": iou,
        "map": {
            "objects": 10,
            "on_farm": 6,
            "precision": 0.6,
            "recall": 0.9,
            "unmapped": 4,
            "unmapped_found": found,
        },
        "ignored": None if ignored is None else {"per_split": {"train": {"pixels": ignored}}},
        "map_hard_negatives": None if ignored is None else 0,
        "test_tiles": tiles,
    }


def test_retraining_reads_the_baselines_review_with_both_options() -> None:
    review = Path("data/runs/noisy-base-s3/triage/review.gpkg")
    cfg = load_config("configs/demo.yaml", retrain_overrides(3, review))
    assert cfg.run.name == "noisy-retrain-s3" and cfg.run.seed == 3
    assert cfg.train.ignore_labels is not None and cfg.train.ignore_labels.review == review
    hard = cfg.labels.hard_negatives
    assert hard is not None and hard.review == review and hard.splits == ("train",)
    assert hard.split_seed == cfg.split_seed == 19  # the demo's fixed split


def test_summary_accepts_only_a_kept_iou_and_more_unmapped_farms() -> None:
    good = summarize({0: {"before": _row(0.5, 1, ["a"]), "after": _row(0.55, 3, ["a"], 100)}})
    assert good["accepted"] and good["same_test_tiles"]
    assert good["after"]["unmapped_found"] == 3 and good["before"]["test_iou"] == 0.5
    worse = summarize(
        {
            0: {"before": _row(0.5, 1, ["a"]), "after": _row(0.55, 3, ["a"], 100)},
            1: {"before": _row(0.6, 1, ["b"]), "after": _row(0.4, 1, ["c"], 100)},
        }
    )
    assert not worse["accepted"] and not worse["same_test_tiles"]
    table = markdown_table(good)
    assert "| 0 | retrained | 0.550 | 10 | 6 | 0.600 | 0.900 | 3 of 4 | 100 | 0 |" in table
