"""Fixtures of the labels tests: hand-written OSM files and run configs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from osmbuild import OsmBuilder, demo_features

from pipeline.config import RunConfig


@pytest.fixture
def demo_osm(tmp_path: Path) -> tuple[OsmBuilder, Path]:
    """The hand-written feature set as an .osm file whose header box pads the features."""
    b = demo_features()
    minx, miny, maxx, maxy = b.bounds()
    return b, b.write_osm(
        tmp_path / "demo.osm", (minx - 0.05, miny - 0.05, maxx + 0.05, maxy + 0.05)
    )


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., RunConfig]:
    """A RunConfig under ``tmp_path/data`` with ``labels`` overrides."""

    def _make(seed: int = 0, tiles: dict[str, Any] | None = None, **labels: Any) -> RunConfig:
        return RunConfig.model_validate(
            {
                "run": {"name": "t", "seed": seed, "data_root": str(tmp_path / "data")},
                "labels": {"negative_buffer_m": 300, **labels},
                "fetch": {"catalog": "unused"},
                "tiles": tiles or {"block_size_m": 2560},
            }
        )

    return _make
