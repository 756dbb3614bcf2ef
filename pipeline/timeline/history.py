"""One site's history over the map's windows: status per window, construction, growth, loss.

A *site* is a footprint where some window mapped a farm (:mod:`pipeline.timeline.sites`). In each
window the stacked probability mosaic inside the footprint gives :class:`WindowStats`; from them
every window gets a status (:func:`status`):

- ``farm``: the footprint is clear enough and mapped (area at least the map's minimum and a
  share :data:`MIN_FARM_SHARE` of the clear footprint);
- ``clear``: clear enough and not mapped (``missed`` when it is a farm before and after: the
  model missed it);
- ``unseen``: less than :data:`MIN_CLEAR` of the footprint had a clear acquisition (a gap:
  never "no farm").

:func:`site_history` then reads the construction window (the first ``farm`` window), the last
earlier window that saw the site clear and not a farm, growth, and whether the farm disappeared
and why that is likelier: decommissioned, or a model miss (the probability stayed near the
threshold, the farm comes back, or the acquisition was only partly clear). Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

#: A window sees a site when at least this share of its footprint has a clear acquisition.
MIN_CLEAR: Final[float] = 0.5
#: A window maps a site as a farm when at least this share of the clear footprint is mapped.
MIN_FARM_SHARE: Final[float] = 0.1
#: A farm "grew" (``extended``) when its area rose by this share from its first farm window.
GROWTH_SHARE: Final[float] = 0.2
#: A lost farm is a likelier model miss when the footprint's mean probability stays at least this
#: share of the threshold, or when less than :data:`MISS_CLEAR` of it was clear.
MISS_PROB_SHARE: Final[float] = 0.5
MISS_CLEAR: Final[float] = 0.9

Status = Literal["farm", "clear", "missed", "unseen"]
Reason = Literal["decommissioned", "model_miss", ""]


@dataclass(frozen=True)
class WindowStats:
    """A site's footprint in one window's mosaic.

    Attributes:
        clear_fraction: Share of the footprint's pixels with a probability (a clear acquisition).
        clear_pixels: Those pixels.
        farm_pixels: Clear footprint pixels at or above the threshold.
        area_m2: ``farm_pixels`` times the pixel area.
        mean_prob: Mean probability of the clear footprint pixels (NaN when none).
    """

    clear_fraction: float
    clear_pixels: int
    farm_pixels: int
    area_m2: float
    mean_prob: float

    @property
    def farm_share(self) -> float:
        """Mapped share of the clear footprint (0 when nothing is clear)."""
        return self.farm_pixels / max(self.clear_pixels, 1)


def window_stats(prob: np.ndarray, inside: np.ndarray, threshold: float, gsd: float) -> WindowStats:
    """:class:`WindowStats` of a footprint.

    Args:
        prob: ``(H, W)`` float probability (NaN where the window had no clear acquisition).
        inside: ``(H, W)`` bool, the footprint on the same grid.
        threshold: Probability of a farm pixel.
        gsd: Pixel size in metres.
    """
    n = int(inside.sum())
    clear = inside & np.isfinite(prob)
    values = prob[clear]
    farm = int((values >= threshold).sum())
    return WindowStats(
        clear_fraction=values.size / n if n else 0.0,
        clear_pixels=int(values.size),
        farm_pixels=farm,
        area_m2=farm * gsd * gsd,
        mean_prob=float(values.mean()) if values.size else float("nan"),
    )


def status(stats: WindowStats, min_area_m2: float) -> Status:
    """``farm``, ``clear`` or ``unseen`` (``missed`` is decided over the windows)."""
    if stats.clear_fraction < MIN_CLEAR:
        return "unseen"
    if stats.farm_pixels and stats.area_m2 >= min_area_m2 and stats.farm_share >= MIN_FARM_SHARE:
        return "farm"
    return "clear"


def statuses(stats: Sequence[WindowStats], min_area_m2: float) -> list[Status]:
    """Per window (earliest first): a ``clear`` window between two ``farm`` windows is
    ``missed``."""
    out: list[Status] = [status(s, min_area_m2) for s in stats]
    farms = [i for i, s in enumerate(out) if s == "farm"]
    if farms:
        for i in range(farms[0] + 1, farms[-1]):
            if out[i] == "clear":
                out[i] = "missed"
    return out


@dataclass(frozen=True)
class SiteHistory:
    """What a site's windows say (window names; ``""``: none).

    Attributes:
        statuses: Per window, earliest first.
        construction_window: First window mapping it as a farm.
        clear_before: Last window before that one seeing the site clear and not a farm (the
            farm was built between the two).
        new: Built during the windows (``clear_before`` is set); a farm seen first after only
            unseen windows, or from the first window, is not new.
        first_area_m2: Area in the construction window.
        last_area_m2: Area in the last farm window.
        extended: Area grew by :data:`GROWTH_SHARE` or more.
        disappeared: A farm once, clear and not a farm in a later window, and not a farm again.
        gone_window: The first such window.
        gone_reason: ``decommissioned`` or ``model_miss`` (which is likelier), ``""`` if not gone.
    """

    statuses: tuple[Status, ...]
    construction_window: str
    clear_before: str
    new: bool
    first_area_m2: float
    last_area_m2: float
    extended: bool
    disappeared: bool
    gone_window: str
    gone_reason: Reason


def gone_reason(stats: WindowStats, threshold: float) -> Reason:
    """Likelier cause of a lost farm in a clear window: a model miss when the footprint's mean
    probability stayed high or the window was only partly clear, else decommissioned."""
    if stats.clear_fraction < MISS_CLEAR:
        return "model_miss"
    if np.isfinite(stats.mean_prob) and stats.mean_prob >= MISS_PROB_SHARE * threshold:
        return "model_miss"
    return "decommissioned"


def site_history(
    names: Sequence[str], stats: Sequence[WindowStats], min_area_m2: float, threshold: float
) -> SiteHistory:
    """A site's history from its per-window stats (``names`` and ``stats`` earliest first)."""
    marks = statuses(stats, min_area_m2)
    farms = [i for i, s in enumerate(marks) if s == "farm"]
    if not farms:
        return SiteHistory(tuple(marks), "", "", False, 0.0, 0.0, False, False, "", "")
    first, last = farms[0], farms[-1]
    before = [i for i in range(first) if marks[i] == "clear"]
    after = [i for i in range(last + 1, len(marks)) if marks[i] == "clear"]
    a0, a1 = stats[first].area_m2, stats[last].area_m2
    gone = after[0] if after else None
    return SiteHistory(
        statuses=tuple(marks),
        construction_window=names[first],
        clear_before=names[before[-1]] if before else "",
        new=bool(before),
        first_area_m2=a0,
        last_area_m2=a1,
        extended=a1 >= (1.0 + GROWTH_SHARE) * a0 and last > first,
        disappeared=gone is not None,
        gone_window=names[gone] if gone is not None else "",
        gone_reason=gone_reason(stats[gone], threshold) if gone is not None else "",
    )
