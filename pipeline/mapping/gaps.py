"""Chunks left unmapped, and why: listed, never written as "no farm"."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import shapely

from pipeline.io import atomic_path
from pipeline.mapping.grid import Chunk
from pipeline.osm.geometry import to_epsg

#: Columns of ``gaps.gpkg`` (besides ``geometry``).
COLUMNS = ("chunk_id", "epsg", "reason")


def gap_frame(gaps: Sequence[tuple[Chunk, str]]) -> gpd.GeoDataFrame:
    """One row per gap chunk: its part of the area (EPSG:4326) and the reason."""
    rows = [
        {
            "chunk_id": chunk.chunk_id,
            "epsg": chunk.epsg,
            "reason": reason,
            "geometry": to_epsg(
                shapely.segmentize(chunk.piece, chunk.extent / 8),
                4326,
                src=chunk.epsg,
                max_segment_deg=0,
            ),
        }
        for chunk, reason in gaps
    ]
    return gpd.GeoDataFrame(rows, columns=[*COLUMNS, "geometry"], geometry="geometry", crs=4326)


def write_gaps(path: Path, frame: gpd.GeoDataFrame) -> Path:
    """Write ``gaps.gpkg`` (layer ``gaps``) atomically; an empty table keeps its columns."""
    with atomic_path(path) as tmp:
        frame.to_file(
            tmp, layer="gaps", driver="GPKG", geometry_type="Polygon" if frame.empty else None
        )
    return path
