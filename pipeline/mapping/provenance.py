"""The acquisitions of an area: what each provenance index (1, 2, ...) of the map stands for.

Indices follow acquisition time (then scene key), so one search gives one table; 0 means "no
acquisition" (nodata). The table is written as ``map/acquisitions.csv``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac

from pipeline.io import atomic_path
from pipeline.stac.radiometry import harmonization_for
from pipeline.stac.scene import group_scenes, item_datetime, scene_key

#: Columns of ``acquisitions.csv``.
COLUMNS = (
    "index",
    "scene_key",
    "item_ids",
    "datetime",
    "platform",
    "processing_baseline",
    "harmonization",
)


@dataclass(frozen=True)
class Acquisition:
    """One acquisition (the items of one datatake).

    Attributes:
        index: Provenance value of its pixels (1-based).
        key: :func:`pipeline.stac.scene.scene_key` of its items.
        items: Its items, ordered by (datetime, id).
        when: Datetime of the first item (UTC).
    """

    index: int
    key: str
    items: tuple[pystac.Item, ...]
    when: datetime

    @property
    def item_ids(self) -> list[str]:
        return [item.id for item in self.items]

    def row(self) -> dict[str, str | int]:
        """One row of ``acquisitions.csv``."""
        first = self.items[0]
        rules = [harmonization_for(item) for item in self.items]
        return {
            "index": self.index,
            "scene_key": self.key,
            "item_ids": ";".join(self.item_ids),
            "datetime": self.when.isoformat().replace("+00:00", "Z"),
            "platform": str(first.properties.get("platform", "")),
            "processing_baseline": ";".join(dict.fromkeys(r.baseline for r in rules)),
            "harmonization": ";".join(dict.fromkeys(r.rule for r in rules)),
        }


def acquisitions(items: Sequence[pystac.Item]) -> list[Acquisition]:
    """The items grouped into acquisitions, indexed 1.. in time order."""
    scenes = sorted(group_scenes(items), key=lambda s: (item_datetime(s[0]), scene_key(s[0])))
    return [
        Acquisition(i, scene_key(scene[0]), tuple(scene), item_datetime(scene[0]))
        for i, scene in enumerate(scenes, start=1)
    ]


def provenance_dtype(n_acquisitions: int) -> str:
    """``uint8`` while indices fit (up to 255 acquisitions), else ``uint16``."""
    return "uint8" if n_acquisitions <= np.iinfo(np.uint8).max else "uint16"


def write_acquisitions(path: Path, table: Sequence[Acquisition]) -> Path:
    """Write ``acquisitions.csv`` atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for acq in table:
            writer.writerow(acq.row())
    return path
