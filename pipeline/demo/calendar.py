"""When the demo world is seen: its acquisitions, their orbits and sun, and their windows.

The real scene is Sentinel-2A's acquisition of tile 18SVG on 2016-01-12 from relative orbit
R011 (16:02 UTC). Sentinel-2A revisits an orbit every 10 days (143 orbits), so the world's
other acquisitions of that orbit fall on 10-day steps: the cloudy one on 2016-01-02 and the
history (``world.history``, 2015). The snow-free twin comes from the neighbouring orbit R111,
whose track lies one track spacing east and which passes three days (43 orbits) earlier and
about ten minutes earlier in the day (2016-01-09 15:52 UTC); at 37.7 N neighbouring swaths
overlap by about a quarter, and the demo lets both cover the whole scene.

Acquisitions closer than :data:`WINDOW_GAP_DAYS` form one *window* (a composite's worth);
farms are built, extended and removed only between windows, never inside one, so a window's
acquisitions show the same farms and a composite of them is consistent.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Final, Literal

from pipeline.config.world import SCENE_DATE, WorldConfig

Role = Literal["clear", "cloudy", "snowfree", "history"]

#: Sensing time of the scene's orbit R011, and of the neighbouring orbit R111 (UTC).
SENSING_TIME: Final[dt.time] = dt.time(16, 2, 12)
TWIN_SENSING_TIME: Final[dt.time] = dt.time(15, 52, 12)
#: The cloudy item's and the snow-free twin's days (January 2016).
CLOUDY_DATE: Final[dt.date] = dt.date(2016, 1, 2)
SNOWFREE_DATE: Final[dt.date] = dt.date(2016, 1, 9)
#: Relative orbits of the scene and of the twin; the scene's absolute orbit and the orbits a day.
RELATIVE_ORBIT: Final[int] = 11
TWIN_RELATIVE_ORBIT: Final[int] = 111
ABSOLUTE_ORBIT: Final[int] = 2900
ORBITS_PER_DAY: Final[float] = 14.3
#: Acquisitions at most this many days apart share a window.
WINDOW_GAP_DAYS: Final[int] = 30
#: Centre of the full scene (lon, lat), for the sun's position.
SCENE_CENTRE_LONLAT: Final[tuple[float, float]] = (-75.619, 37.673)


@dataclass(frozen=True)
class Acquisition:
    """One item of the world.

    Attributes:
        when: Sensing time (UTC).
        role: ``clear`` (the real scene, with the planted snow), ``cloudy`` (the same ground and
            snow under clouds), ``snowfree`` (the clear scene's twin without snow), ``history``
            (an earlier acquisition: the farms built by then, no snow).
        cloud_fraction: Share of the scene under clouds and shadows (0: clear).
        snow: The planted snow is in its pixels.
        relative_orbit: Sentinel-2A relative orbit (1-143).
        window: Index of its window (0 = the earliest; the January acquisitions share the last).
    """

    when: dt.datetime
    role: Role
    cloud_fraction: float
    snow: bool
    relative_orbit: int
    window: int

    @property
    def absolute_orbit(self) -> int:
        """Absolute orbit number: :data:`ABSOLUTE_ORBIT` on 2016-01-12, 14.3 a day."""
        days = (self.when - _at(SCENE_DATE, SENSING_TIME)).total_seconds() / 86_400.0
        return ABSOLUTE_ORBIT + round(days * ORBITS_PER_DAY)

    @property
    def sun(self) -> tuple[float, float]:
        """``(azimuth, elevation)`` of the sun at the scene centre, degrees."""
        return sun_position(self.when, *SCENE_CENTRE_LONLAT)


def _at(day: dt.date, time: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, time, tzinfo=dt.UTC)


def windows(days: list[dt.date]) -> list[int]:
    """Window index per day (sorted days): a new window after a gap over :data:`WINDOW_GAP_DAYS`."""
    out: list[int] = []
    for i, day in enumerate(days):
        fresh = i == 0 or (day - days[i - 1]).days > WINDOW_GAP_DAYS
        out.append(0 if i == 0 else out[-1] + int(fresh))
    return out


def acquisitions(wcfg: WorldConfig) -> list[Acquisition]:
    """The world's items in time order: history, then the cloudy, twin and clear items of
    January 2016 (those ``wcfg`` asks for).

    The history's windows come first; the January items share the window after them.
    """
    history = [h.date for h in wcfg.history]
    history_windows = windows(history)
    january = 1 + history_windows[-1] if history else 0
    items = [
        Acquisition(
            _at(h.date, SENSING_TIME), "history", h.cloud_fraction, False, RELATIVE_ORBIT, w
        )
        for h, w in zip(wcfg.history, history_windows, strict=True)
    ]
    if wcfg.cloudy_item:
        items.append(
            Acquisition(
                _at(CLOUDY_DATE, SENSING_TIME),
                "cloudy",
                wcfg.cloud_fraction,
                True,
                RELATIVE_ORBIT,
                january,
            )
        )
    if wcfg.snowfree_item:
        items.append(
            Acquisition(
                _at(SNOWFREE_DATE, TWIN_SENSING_TIME),
                "snowfree",
                0.0,
                False,
                TWIN_RELATIVE_ORBIT,
                january,
            )
        )
    items.append(
        Acquisition(_at(SCENE_DATE, SENSING_TIME), "clear", 0.0, True, RELATIVE_ORBIT, january)
    )
    return items


def sun_position(when: dt.datetime, lon: float, lat: float) -> tuple[float, float]:
    """``(azimuth clockwise from north, elevation)`` of the sun in degrees (NOAA's
    low-precision formulas: about 0.5 degrees)."""
    hour = when.hour + when.minute / 60.0 + when.second / 3600.0
    g = 2.0 * math.pi / 365.0 * (when.timetuple().tm_yday - 1 + (hour - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    hour_angle = math.radians((hour * 60.0 + eqtime + 4.0 * lon) / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(
        hour_angle
    )
    elevation = 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
    azimuth = math.degrees(
        math.atan2(
            math.sin(hour_angle),
            math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi),
        )
    )
    return (azimuth + 180.0) % 360.0, elevation
