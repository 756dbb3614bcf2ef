"""CRS helpers: UTM zone choice, reprojection, areas in metres."""

from __future__ import annotations

import pytest
from pyproj import Geod
from shapely.geometry import Point, box

from pipeline.geo.crs import area_m2, to_epsg, to_local_utm, transformer, utm_epsg


def test_utm_zone_and_area() -> None:
    assert utm_epsg(-72.0001, 40) == 32618 and utm_epsg(-71.9999, 40) == 32619
    assert utm_epsg(151.2, -33.9) == 32756
    assert utm_epsg(-180.0, 0.0) == 32601 and utm_epsg(180.0, -0.1) == 32760  # clamped ends
    square = box(-72.006, 40.0, -71.994, 40.004)
    geod_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(square)[0])
    assert area_m2(square) == pytest.approx(geod_area, rel=0.002)
    assert area_m2(box(0, 0, 0, 0).buffer(0)) == 0.0


def test_reprojection_round_trips_and_picks_the_centroid_zone() -> None:
    point = Point(-75.75, 37.55)
    utm = to_epsg(point, 32618)
    # UTM 18N: the zone's central meridian (-75°) is x = 500 km; -75.75° lies west of it
    assert 430_000 < utm.x < 440_000 and 4_150_000 < utm.y < 4_170_000
    back = to_epsg(utm, 4326, src=32618, max_segment_deg=0)
    assert back.x == pytest.approx(point.x, abs=1e-9) and back.y == pytest.approx(point.y, abs=1e-9)
    farm = box(-72.01, 40.0, -71.999, 40.01)  # crosses 72°W; its centroid lies west of it
    local, epsg = to_local_utm(farm)
    assert epsg == 32618 and local.equals_exact(to_epsg(farm, 32618), 0)
    assert transformer(4326, 32618) is transformer(4326, 32618)  # cached
