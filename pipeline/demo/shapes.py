"""Footprint shapes of planted objects, in projected metres (pure shapely, seeded).

Every generator returns a valid polygon centred near ``(cx, cy)`` with exactly the requested
area (to floating-point precision) and a random rotation.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

FarmShape = Literal["rectangle", "l_shape", "irregular", "with_hole"]
FARM_SHAPES: Final[tuple[FarmShape, ...]] = ("rectangle", "l_shape", "irregular")
#: Probability of each plain farm shape in :data:`FARM_SHAPES` order.
FARM_SHAPE_P: Final[tuple[float, ...]] = (0.45, 0.25, 0.30)
#: Share of a holed farm's outer area taken by its hole.
HOLE_SHARE: Final[tuple[float, float]] = (0.10, 0.18)


def _scaled(geom: BaseGeometry, area: float, cx: float, cy: float, angle: float) -> Polygon:
    geom = affinity.scale(geom, math.sqrt(area / geom.area), math.sqrt(area / geom.area))
    geom = affinity.rotate(geom, angle, origin="centroid")
    c = geom.centroid
    return affinity.translate(geom, cx - c.x, cy - c.y)


def rectangle(rng: np.random.Generator, cx: float, cy: float, area: float) -> Polygon:
    """A rotated rectangle of aspect ratio 1-2.5."""
    aspect = rng.uniform(1.0, 2.5)
    return _scaled(box(0, 0, aspect, 1.0), area, cx, cy, rng.uniform(0, 180))


def l_shape(rng: np.random.Generator, cx: float, cy: float, area: float) -> Polygon:
    """An L: a long bar with a second bar at one end, rotated."""
    a, b = rng.uniform(1.6, 2.6), rng.uniform(0.45, 0.7)
    arm = rng.uniform(0.8, 1.6)
    geom = box(0, 0, a, b).union(box(0, 0, b, b + arm))
    return _scaled(geom, area, cx, cy, rng.uniform(0, 360))


def irregular(rng: np.random.Generator, cx: float, cy: float, area: float) -> Polygon:
    """A star-shaped polygon of 6-11 vertices with radial jitter (a parcel-following farm)."""
    n = int(rng.integers(6, 12))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = rng.uniform(0.65, 1.0, n)
    geom = Polygon(np.column_stack([radii * np.cos(angles), radii * np.sin(angles)]))
    if not geom.is_valid or geom.area < 0.5:
        geom = geom.convex_hull
    return _scaled(geom, area, cx, cy, 0.0)


def with_hole(rng: np.random.Generator, cx: float, cy: float, area: float) -> Polygon:
    """A rotated rectangle with one rectangular hole (a pond or yard without panels).

    ``area`` is the area of the panelled part (outer minus hole).
    """
    share = rng.uniform(*HOLE_SHARE)
    aspect = rng.uniform(1.0, 1.8)
    hx, hy = math.sqrt(share * aspect), math.sqrt(share / aspect)
    ox, oy = rng.uniform(0.25, 0.45) * aspect, rng.uniform(0.25, 0.45)
    hole = box(ox, oy, ox + hx * 0.8, oy + hy * 0.8)
    geom = Polygon(box(0, 0, aspect, 1.0).exterior.coords, [hole.exterior.coords])
    return _scaled(geom, area, cx, cy, rng.uniform(0, 180))


def farm_polygon(
    shape: FarmShape, rng: np.random.Generator, cx: float, cy: float, area: float
) -> Polygon:
    """A farm footprint of ``shape`` and ``area`` (m²) centred at ``(cx, cy)``."""
    maker = {
        "rectangle": rectangle,
        "l_shape": l_shape,
        "irregular": irregular,
        "with_hole": with_hole,
    }[shape]
    return maker(rng, cx, cy, area)


def blob(rng: np.random.Generator, cx: float, cy: float, area: float) -> Polygon:
    """A smooth irregular blob (snow drift, wet patch): a jittered ellipse, 24 vertices."""
    t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    phases = rng.uniform(0, 2 * math.pi, 3)
    r = 1.0 + sum(0.12 / k * np.cos(k * t + p) for k, p in zip((2, 3, 5), phases, strict=True))
    aspect = rng.uniform(1.0, 1.8)
    geom = Polygon(np.column_stack([aspect * r * np.cos(t), r * np.sin(t)]))
    return _scaled(geom, area, cx, cy, rng.uniform(0, 180))


def split_in_two(poly: Polygon, rng: np.random.Generator) -> list[Polygon]:
    """Cut ``poly`` across its longer side into two polygons (generator sub-arrays)."""
    rect = poly.minimum_rotated_rectangle
    xs, ys = rect.exterior.coords.xy
    p = [(xs[i], ys[i]) for i in range(4)]
    long_first = math.dist(p[0], p[1]) >= math.dist(p[1], p[2])
    a, b, c, d = (p[0], p[1], p[2], p[3]) if long_first else (p[1], p[2], p[3], p[0])
    t = rng.uniform(0.4, 0.6)
    m1 = (a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1]))
    m2 = (d[0] + t * (c[0] - d[0]), d[1] + t * (c[1] - d[1]))
    halves = [Polygon([a, m1, m2, d]).buffer(0), Polygon([m1, b, c, m2]).buffer(0)]
    parts = []
    for half in halves:
        piece = poly.intersection(half)
        if piece.geom_type == "MultiPolygon":
            piece = max(piece.geoms, key=lambda g: g.area)
        if piece.geom_type == "Polygon" and piece.area > 0:
            parts.append(piece)
    return parts
