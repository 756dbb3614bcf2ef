"""The ``temporal`` baseline: the same patch on a date clear of snow and cloud.

Integrated Gradients and superpixel SHAP measure each pixel's part in ``f(x) - f(x')``. With a
synthetic ``x'`` (zeros, a median) every pixel differs from it; with the same ground on a date
without the cue, ``x - x'`` is (nearly) the cue itself, so the attribution answers "what did
the snow add?". :func:`pick_reference` chooses among a patch's other acquisitions
(:mod:`pipeline.stac.alternates`) the one with the least snow, cloud, shadow and nodata by SCL,
within ``attribute.temporal_max_cue_share``; :func:`reference_input` scales it to the patch's
radiometry (:func:`~pipeline.stac.alternates.match_gain`), fills its nodata with the patch and
normalizes it. A patch with none gets a :class:`TemporalReference` without input and the reason:
the methods then fall back to their default baseline and record why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.bands import SCL_NOT_CLEAR, SCL_SNOW
from pipeline.model.io import ModelMeta, normalize
from pipeline.stac.alternates import Alternate, match_gain

#: SCL classes a temporal baseline must (nearly) be free of: nodata, defective, cloud shadow,
#: clouds, cirrus and snow.
NOT_CUE_FREE = frozenset(SCL_NOT_CLEAR | {SCL_SNOW})


@dataclass(frozen=True)
class TemporalReference:
    """A patch's temporal baseline, or why it has none.

    Attributes:
        x: ``(1, C, H, W)`` normalized input of the cue-free date, or ``None``.
        item_id: Its STAC item (empty without one).
        datetime: Its date (ISO 8601; empty without one).
        reason: Why there is none (empty with one).
    """

    x: torch.Tensor | None
    item_id: str = ""
    datetime: str = ""
    reason: str = ""


def cue_share(scl: np.ndarray) -> float:
    """Share of an SCL window that is snow, cloud, shadow, defective or nodata (0-1)."""
    return float(np.isin(scl, list(NOT_CUE_FREE)).mean()) if scl.size else 1.0


def pick_reference(alternates: Sequence[Alternate], max_share: float) -> Alternate | str:
    """The acquisition with the smallest :func:`cue_share` (ties: lower rank) within
    ``max_share``, or why none qualifies."""
    if not alternates:
        return "no other acquisition of the patch (set fetch.alternates and re-run fetch)"
    best = min(alternates, key=lambda a: (cue_share(a.scl), a.rank))
    share = cue_share(best.scl)
    if share > max_share:
        return (
            f"no acquisition clear of snow and cloud: the clearest ({best.item_id}) has "
            f"{share:.1%} snow/cloud/nodata > attribute.temporal_max_cue_share {max_share:.1%}"
        )
    return best


def reference_image(array: np.ndarray, alt: Alternate) -> np.ndarray:
    """``alt``'s ``(C, H, W)`` DN scaled to ``array``'s radiometry on pixels both show clear,
    with its nodata filled from ``array`` (no difference there)."""
    valid_alt = np.all(alt.image != 0, axis=0)
    common = valid_alt & np.all(array != 0, axis=0) & ~np.isin(alt.scl, list(NOT_CUE_FREE))
    gain = match_gain(array, alt.image, common)
    out = alt.image.astype(np.float32) * gain[:, None, None]
    out[:, ~valid_alt] = array[:, ~valid_alt]
    return out


def reference_input(
    array: np.ndarray,
    alternates: Sequence[Alternate],
    meta: ModelMeta,
    device: torch.device,
    max_share: float,
) -> TemporalReference:
    """The patch's :class:`TemporalReference` (``array``: its ``(C, H, W)`` stored DN)."""
    chosen = pick_reference(alternates, max_share)
    if isinstance(chosen, str):
        return TemporalReference(None, reason=chosen)
    x = normalize(reference_image(array, chosen), meta)[None].to(device)
    return TemporalReference(x, chosen.item_id, chosen.datetime)
