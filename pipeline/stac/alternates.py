"""A patch's other acquisitions in the window (``fetch.alternates``): written, listed, read.

The fetch stage keeps, next to each patch, up to ``fetch.alternates`` other scenes of the same
ground (clearest first, :func:`pipeline.stac.scene.other_scenes`), each as a 10-band COG and
its SCL on the patch grid (:meth:`RunPaths.alternate_image`, :meth:`RunPaths.alternate_scl`),
and a JSON list of them (:meth:`RunPaths.alternates_list`: rank, item id, datetime, clear and
snow shares, files). The audit's real-background counterfactual and the ``temporal``
attribution baseline read them back with :func:`read_alternates`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from pipeline.bands import BANDS
from pipeline.geo.raster import Grid
from pipeline.geo.styles import write_patch_cogs
from pipeline.io import write_json
from pipeline.paths import RunPaths

log = logging.getLogger(__name__)

#: Fewer common clear pixels than this and an alternate is taken at gain 1.
MIN_GAIN_PIXELS = 100


@dataclass(frozen=True)
class Alternate:
    """Another acquisition of a patch, as the audit and the attribute stage read it.

    Attributes:
        rank: 1 for the clearest other acquisition, then 2, ...
        item_id: Its primary STAC item.
        datetime: Its acquisition time (ISO 8601, UTC).
        image: ``(10, H, W)`` uint16 stored DN on the patch grid (0 = nodata).
        scl: ``(H, W)`` uint8 SCL on the same grid.
    """

    rank: int
    item_id: str
    datetime: str
    image: np.ndarray
    scl: np.ndarray


def alternates_digest(patch_digest: str, count: int) -> str:
    """What a patch's alternates were written with: its own digest and ``fetch.alternates``."""
    return f"{patch_digest}:alternates={count}"


def listed(paths: RunPaths, patch_id: str) -> dict[str, Any] | None:
    """The patch's alternates list (``None`` when it has none or it is unreadable)."""
    path = paths.alternates_list(patch_id)
    if not path.is_file():
        return None
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc


def alternates_current(paths: RunPaths, patch_id: str, digest: str, count: int) -> bool:
    """Whether the patch's alternates were written for this digest and count (always when
    ``count`` is 0: none are wanted)."""
    if count == 0:
        return True
    doc = listed(paths, patch_id)
    if doc is None or doc.get("digest") != alternates_digest(digest, count):
        return False
    return all(paths.resolve(a["image"]).is_file() for a in doc.get("alternates", []))


def write_alternates(
    paths: RunPaths,
    patch_id: str,
    grid: Grid,
    scenes: Sequence[Any],
    digest: str,
) -> list[dict[str, Any]]:
    """Write each :class:`~pipeline.stac.patch.AlternateScene` of a patch and their list.

    Args:
        paths: The run's paths.
        patch_id: The patch.
        grid: The patch grid (the alternates share it).
        scenes: The alternates, clearest first.
        digest: :func:`alternates_digest` of the patch, stored in the list and the tags.

    Returns:
        The list's entries (rank, item_id, datetime, clear_fraction, snow_fraction, image, scl).
    """
    entries = []
    for rank, scene in enumerate(scenes, start=1):
        image, scl = paths.alternate_image(patch_id, rank), paths.alternate_scl(patch_id, rank)
        tags = {**scene.tags, "patch_id": patch_id, "alternate_rank": str(rank), "digest": digest}
        write_patch_cogs(image, scl, scene.image, scene.scl, grid, tags)
        entries.append(
            {
                "rank": rank,
                "item_id": scene.tags.get("item_id", ""),
                "datetime": scene.tags.get("datetime", ""),
                "clear_fraction": float(scene.tags.get("clear_fraction", "nan")),
                "snow_fraction": float(scene.tags.get("snow_fraction", "nan")),
                "image": paths.relative(image),
                "scl": paths.relative(scl),
            }
        )
    write_json(
        paths.alternates_list(patch_id),
        {"patch_id": patch_id, "digest": digest, "alternates": entries},
    )
    return entries


def read_alternates(paths: RunPaths, patch_id: str, grid: Grid) -> list[Alternate]:
    """The patch's alternates on ``grid``, clearest first (``[]`` when it has none).

    A file that cannot be read or is off the patch grid is logged and left out: a patch with
    no usable alternate gets the methods that need none.
    """
    doc = listed(paths, patch_id)
    out: list[Alternate] = []
    for entry in doc.get("alternates", []) if doc else []:
        try:
            with rasterio.open(paths.resolve(entry["image"])) as src:
                on_grid = src.transform == grid.transform and src.shape == grid.shape
                image = src.read()
            with rasterio.open(paths.resolve(entry["scl"])) as src:
                scl = src.read(1)
        except (RasterioError, KeyError) as err:
            log.warning("alternate %s of %s unreadable (%s); left out", entry, patch_id, err)
            continue
        if not on_grid or image.shape[0] != len(BANDS):
            log.warning("alternate %s of %s is not on the patch grid; left out", entry, patch_id)
            continue
        out.append(
            Alternate(int(entry["rank"]), str(entry["item_id"]), str(entry["datetime"]), image, scl)
        )
    return out


def alternate_files(paths: RunPaths, patch_ids: Sequence[str]) -> list[Path]:
    """The alternates' lists, images and SCLs of ``patch_ids`` on disk (for the manifest)."""
    out: list[Path] = []
    for pid in patch_ids:
        doc = listed(paths, pid)
        if doc is None:
            continue
        out.append(paths.alternates_list(pid))
        for entry in doc.get("alternates", []):
            out += [paths.resolve(entry["image"]), paths.resolve(entry["scl"])]
    return out


def match_gain(image: np.ndarray, alt: np.ndarray, common: np.ndarray) -> np.ndarray:
    """Per-band gain ``(C,)`` taking ``alt`` to ``image``'s radiometry: the ratio of their
    medians on ``common`` pixels (1 where there are fewer than :data:`MIN_GAIN_PIXELS`)."""
    if int(common.sum()) < MIN_GAIN_PIXELS:
        return np.ones(image.shape[0], np.float32)
    num = np.median(image[:, common].astype(np.float32), axis=1)
    den = np.median(alt[:, common].astype(np.float32), axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-6), 1.0).astype(np.float32)


def drop_alternates(paths: RunPaths, patch_ids: Sequence[str]) -> int:
    """Delete the alternates of ``patch_ids`` (``fetch.alternates`` set back to 0), so that no
    later stage reads acquisitions the current config did not ask for; returns how many
    patches had some."""
    dropped = 0
    for pid in patch_ids:
        files = alternate_files(paths, [pid])
        for path in files:
            path.unlink(missing_ok=True)
        dropped += bool(files)
    return dropped
