"""Progress lines: counts, elapsed time and the time left."""

from __future__ import annotations

import logging

import pytest

from pipeline.model.progress import epoch_line
from pipeline.progress import Progress, duration, eta, progress_line


def test_durations_and_eta() -> None:
    assert [duration(s) for s in (5.9, 200, 3900)] == ["5 s", "3 min 20 s", "1 h 5 min"]
    assert eta(0, 10, 5.0) is None and eta(5, 10, 50.0) == pytest.approx(50.0)
    assert progress_line("attribute", 12, 50, "patches", 63) == (
        "attribute: 12/50 patches (24 %), 1 min 3 s elapsed, about 3 min 19 s left"
    )
    assert (
        progress_line("fetch", 50, 50, "patches", 10)
        == "fetch: 50/50 patches (100 %), 10 s elapsed"
    )


def test_epoch_line_counts_only_this_processes_epochs_for_the_eta() -> None:
    line = epoch_line(7, 24, 100.0, 2, {"val/iou": 0.61, "val/loss": 0.3})  # resumed at 5
    assert line == (
        "train: epoch 7/24 (29 %), 1 min 40 s elapsed, about 14 min 10 s left; "
        "val/iou=0.6100 val/loss=0.3000"
    )


def test_progress_logs_at_most_every_so_often_and_at_the_end(caplog) -> None:
    now = [0.0]
    progress = Progress("audit", 4, "patches", every_s=10, bar=False, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="pipeline.progress"), progress:
        for t in (1.0, 12.0, 13.0, 30.0):
            now[0] = t
            progress.update()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "audit: 2/4 patches (50 %)",
        "audit: 4/4 patches (100 %)",
    ]
