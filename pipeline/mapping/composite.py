"""Best-available composite of a chunk: clearest acquisition first, per-pixel fill.

Acquisitions are ordered by their clear share of the chunk's mapped pixels (clear-share buckets
of ``clear_tie`` are ties, as in fetch; then nearest ``target_date``, most recent without one;
then the first item id). Each pixel takes its bands from the first acquisition in that order
where it is clear: SCL not cloud, shadow, cirrus, saturated or nodata; snow is clear and kept.
Items of one acquisition are mosaicked first-valid, the item covering most of the chunk first,
and harmonized exactly as fetch harmonizes a patch. All functions here take and return arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime

import numpy as np

from pipeline.bands import SCL_NOT_CLEAR
from pipeline.stac.radiometry import apply_offset
from pipeline.stac.scene import mosaic_first_valid

#: ``choice`` value of a pixel clear in no acquisition.
NONE = -1


def item_order(ids: Sequence[str], scls: Sequence[np.ndarray]) -> list[int]:
    """Positions of the items holding data, most coverage first (then id): the mosaic order."""
    order = sorted(range(len(ids)), key=lambda i: (-int((scls[i] != 0).sum()), ids[i]))
    return [i for i in order if (scls[i] != 0).any()]


def scene_scl(
    scls: Sequence[np.ndarray], order: Sequence[int], shape: tuple[int, int]
) -> np.ndarray:
    """The acquisition's SCL: its items' SCL mosaicked first-valid in ``order``."""
    if not order:
        return np.zeros(shape, np.uint8)
    return mosaic_first_valid([scls[i] for i in order])


def clear_mask(scl: np.ndarray) -> np.ndarray:
    """Clear pixels (snow included; nodata, cloud, shadow, cirrus, defective excluded)."""
    return ~np.isin(scl, np.fromiter(SCL_NOT_CLEAR, dtype=scl.dtype))


def clear_share(clear: np.ndarray, mapped: np.ndarray) -> float:
    """Share of the ``mapped`` pixels that are clear (0 when none is mapped)."""
    n = int(mapped.sum())
    return float((clear & mapped).sum()) / n if n else 0.0


def rank(
    shares: Sequence[float],
    whens: Sequence[datetime],
    first_ids: Sequence[str],
    *,
    target: date | None,
    tie: float,
) -> list[int]:
    """Positions of the acquisitions, clearest first (see the module docstring for ties)."""

    def key(i: int) -> tuple[float, float, str]:
        bucket = -math.floor(shares[i] / tie + 1e-9)
        when = whens[i]
        distance = -when.timestamp() if target is None else float(abs((when.date() - target).days))
        return (bucket, distance, first_ids[i])

    return sorted(range(len(shares)), key=key)


def choose(clear: Sequence[np.ndarray]) -> np.ndarray:
    """``(H, W)`` int16: position (in ``clear``'s order) of the first clear layer; NONE if none."""
    choice = np.full(clear[0].shape, NONE, np.int16)
    for pos in range(len(clear) - 1, -1, -1):  # the earliest clear layer wins
        choice[clear[pos]] = pos
    return choice


def harmonized_scene(
    raws: Sequence[np.ndarray], offsets: Sequence[int], order: Sequence[int]
) -> np.ndarray:
    """One acquisition's ``(10, H, W)`` image: items harmonized, mosaicked first-valid.

    Args:
        raws: Each item's ``(10, H, W)`` uint16 DN on the chunk grid.
        offsets: Each item's DN offset (:func:`pipeline.stac.radiometry.harmonization_for`).
        order: Mosaic order (positions into ``raws``).
    """
    image = apply_offset(raws[order[0]], offsets[order[0]])
    for i in order[1:]:
        hole = np.all(image == 0, axis=0)
        if not hole.any():
            break
        image[:, hole] = apply_offset(raws[i], offsets[i])[:, hole]
    return image


def compose(choice: np.ndarray, layers: dict[int, np.ndarray], fill: int = 0) -> np.ndarray:
    """Per-pixel pick: ``layers[choice]`` at each pixel, ``fill`` where the choice is NONE.

    Args:
        choice: ``(H, W)`` positions (:func:`choose`).
        layers: Position -> ``(..., H, W)`` array, one per chosen position.
    """
    first = next(iter(layers.values()))
    out = np.full(first.shape, fill, first.dtype)
    for pos, layer in layers.items():
        where = choice == pos
        out[..., where] = layer[..., where]
    return out
