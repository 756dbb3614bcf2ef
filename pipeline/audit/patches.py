"""The audit's inputs: patches with their cues and masks, farm polygons, the attribution index.

Readers (``read_*``, :func:`load_patch`, :func:`analyst_on_grid` for raster cues) open files;
:func:`cue_rows` and :func:`target_mask` compute on what they return. Patches are stored DN
``(C, H, W)`` on a UTM grid; polygons are EPSG:4326 until they are put on a patch grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, reproject

from pipeline.audit.cues import CueMask, compute_cues, valid_pixels
from pipeline.audit.geometry import to_grid_crs
from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import AuditError, MissingArtifactError, RasterError
from pipeline.geo.masks import geometries_mask, grid_footprint_lonlat
from pipeline.geo.raster import Grid, read_raster
from pipeline.paths import RunPaths
from pipeline.stac.alternates import Alternate, read_alternates
from pipeline.tables import Columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FarmLayer:
    """Where the polygons of one kind of object target live.

    Attributes:
        path: The run's GeoPackage of these polygons (a :class:`RunPaths` property).
        id_column: Its column holding the target id of the attribution index.
    """

    path: Callable[[RunPaths], Path]
    id_column: str


#: Object targets (one farm each): target kind -> where its polygons live.
FARM_TARGETS: dict[str, FarmLayer] = {
    "label_farms": FarmLayer(lambda p: p.farms, "farm_id"),
    "predicted_farms": FarmLayer(lambda p: p.predicted_farms, "pred_id"),
    "false_positives": FarmLayer(lambda p: p.false_positives, "id"),
    "missed_farms": FarmLayer(lambda p: p.missed_farms, "id"),
    "mapped_farms": FarmLayer(lambda p: p.map_farms, "farm_id"),
}

#: Columns of ``map/farms.gpkg`` a mapped farm's audit rows carry (its relation to the labels).
MAPPED_COLUMNS = ("in_osm", "osm_id")

#: Columns of ``audit/cues.csv`` (one row per patch and cue; see :func:`cue_rows`).
CUE_COLUMNS = Columns(
    ("patch_id", "the patch"),
    ("cue", "snow, cloud, water or an analyst cue"),
    ("status", "computed or not_computable"),
    ("source", "where the cue mask came from (SCL classes, a spectral test, an analyst file)"),
    ("pixel_share", "share of the patch's valid pixels that are cue (0-1)"),
    ("pixels", "cue pixels (-1: not computable)"),
    ("reason", "why the cue could not be computed"),
)

#: ``(target kind, target id) -> shapely geometry`` in EPSG:4326.
Polygons = dict[tuple[str, str], Any]


@dataclass
class PatchData:
    """Everything the audit needs from one patch.

    Attributes:
        patch_id: The patch's id.
        image: ``(C, H, W)`` stored DN (reflectance x 10000; 0 is nodata).
        bands: Band names of ``image`` (any subset of :data:`pipeline.bands.BANDS`).
        grid: The patch grid (CRS, transform, shape).
        valid: ``(H, W)`` bool, no band is nodata.
        labels: ``(H, W)`` bool label mask (all False when the patch has none).
        predicted: ``(H, W)`` bool predicted mask (all False when the patch has none).
        cues: Cue name -> :class:`CueMask` on this patch.
        alternates: The patch's other acquisitions (``fetch.alternates``), clearest first.
    """

    patch_id: str
    image: np.ndarray
    bands: tuple[str, ...]
    grid: Grid
    valid: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    cues: dict[str, CueMask]
    alternates: tuple[Alternate, ...] = ()


# ------------------------------------------------------------------------------------ reading
def read_image(path: Path) -> tuple[np.ndarray, Grid, tuple[str, ...]]:
    """A patch ``(C, H, W)``, its grid and band names (missing bands are the cues' problem).

    Raises:
        RasterError: the file cannot be read.
    """
    try:
        with rasterio.open(path) as src:
            names = tuple(d or "" for d in src.descriptions)
            return src.read(), Grid(src.crs, src.transform, src.height, src.width), names
    except RasterioError as err:
        raise RasterError(f"cannot read patch {path}: {err}; re-run `make fetch`") from err


def read_band(path: Path, grid: Grid) -> np.ndarray | None:
    """First band ``(H, W)`` of an optional raster on ``grid``; ``None`` if absent or off-grid."""
    if not path.is_file():
        return None
    array, g, _ = read_raster(path)
    if g.shape != grid.shape or g.transform != grid.transform:
        log.warning("%s is not on its patch grid; ignored", path)
        return None
    return array[0]


def read_attribution(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An attribution COG: per-band values ``(len(BANDS), H, W)`` and the aggregate ``(H, W)``."""
    array, _, _ = read_raster(path)
    return array[: len(BANDS)], array[-1]


def read_attribution_index(paths: RunPaths, run: str) -> pd.DataFrame:
    """Rows of ``attribute/index.csv`` with status ``ok`` (``target_id`` ``""`` when none).

    Raises:
        MissingArtifactError: the index is missing.
        AuditError: it lists no successful attribution.
    """
    path = paths.attribution_index
    if not path.is_file():
        raise MissingArtifactError("the attribution index", path, f"attribute RUN={run}")
    index = pd.read_csv(
        path, dtype={"patch_id": str, "target_id": str, "method": str, "target": str, "status": str}
    )
    index["target_id"] = index["target_id"].fillna("")
    ok = index[index.get("status", pd.Series("ok", index=index.index)).fillna("ok") == "ok"]
    if ok.empty:
        raise AuditError(
            f"the run has no attributions to audit: {path} lists {len(index)} rows and none has "
            "status 'ok'. Run `make attribute` with at least one method and target (see "
            "attribute.methods / attribute.targets) and check its skip reasons in the manifest."
        )
    return ok.reset_index(drop=True)


def read_farm_polygons(paths: RunPaths, kinds: set[str]) -> Polygons:
    """``(target kind, id) -> shapely geometry (EPSG:4326)`` for the object targets present.

    A missing GeoPackage or id column is logged and skipped: its targets then get no polygon.
    """
    out: Polygons = {}
    for kind in sorted(kinds & FARM_TARGETS.keys()):
        layer = FARM_TARGETS[kind]
        path = layer.path(paths)
        if not path.is_file():
            log.warning("polygons of %s targets not found at %s", kind, path)
            continue
        gdf = gpd.read_file(path).to_crs(4326)
        if layer.id_column not in gdf.columns:
            log.warning(
                "%s has no %s column; %s targets get no polygon", path, layer.id_column, kind
            )
            continue
        for ident, geom in zip(gdf[layer.id_column].astype(str), gdf.geometry, strict=True):
            out[(kind, ident)] = geom
    return out


def read_mapped_relations(paths: RunPaths) -> dict[tuple[str, str], dict[str, Any]]:
    """``("mapped_farms", farm id) -> {"in_osm": bool, "osm_id": str}`` from ``map/farms.gpkg``
    (``{}`` when the map stage has not run)."""
    if not paths.map_farms.is_file():
        return {}
    frame = gpd.read_file(paths.map_farms, ignore_geometry=True)
    return {
        ("mapped_farms", str(r["farm_id"])): {
            "in_osm": bool(r["in_osm"]),
            "osm_id": "" if pd.isna(r["osm_id"]) else str(r["osm_id"]),
        }
        for r in frame.to_dict(orient="records")
    }


def mapped_farms_on(polygons: Polygons, grid: Grid) -> list[Any]:
    """The mapped farms' polygons (EPSG:4326) that reach into ``grid``."""
    footprint = grid_footprint_lonlat(grid)
    return [g for (k, _), g in polygons.items() if k == "mapped_farms" and g.intersects(footprint)]


def read_analyst_cues(cue_files: Mapping[str, Path]) -> dict[str, Any]:
    """Analyst cue sources: name -> GeoDataFrame (vector) or Path (raster, read per patch).

    Raises:
        AuditError: a configured cue file does not exist or cannot be read.
    """
    out: dict[str, Any] = {}
    for name, path in cue_files.items():
        if not path.is_file():
            raise AuditError(
                f"audit.cue_files[{name!r}] = {path} does not exist; fix the path "
                "or remove the entry"
            )
        if path.suffix.lower() in (".tif", ".tiff"):
            out[name] = path
        else:
            try:
                out[name] = gpd.read_file(path)
            except Exception as err:  # pyogrio raises several types
                raise AuditError(f"cannot read analyst cue {name!r} from {path}: {err}") from err
    return out


def analyst_on_grid(source: Any, grid: Grid) -> np.ndarray | str:
    """An analyst cue on ``grid`` (``(H, W)`` bool), or the reason it cannot be put there.

    A raster source (Path) is reprojected nearest, non-zero meaning cue; a vector source
    (GeoDataFrame) is rasterized after reprojection to the grid's CRS.
    """
    if isinstance(source, Path):
        dst = np.zeros(grid.shape, dtype=np.float32)
        try:
            with rasterio.open(source) as src:
                reproject(
                    rasterio.band(src, 1),
                    dst,
                    dst_transform=grid.transform,
                    dst_crs=grid.crs,
                    resampling=Resampling.nearest,
                    dst_nodata=0,
                )
        except RasterioError as err:
            return f"cannot reproject {source} onto the patch grid: {err}"
        return np.nan_to_num(dst) != 0
    if source.crs is None:
        return "the analyst cue file has no CRS; set one (e.g. EPSG:4326)"
    geoms = source.to_crs(grid.crs).geometry
    return geometries_mask(list(geoms), grid)


def _bool_or_empty(mask: np.ndarray | None, grid: Grid) -> np.ndarray:
    return np.zeros(grid.shape, dtype=bool) if mask is None else mask.astype(bool)


def load_patch(
    paths: RunPaths,
    cfg: RunConfig,
    pid: str,
    analyst: Mapping[str, Any],
    polygons: Polygons | None = None,
) -> PatchData:
    """Read one patch (fetched, or a mapped farm's: :meth:`RunPaths.patch_files`), its SCL and
    masks, and compute its cues.

    Args:
        analyst: Analyst cue sources (:func:`read_analyst_cues`); ``{}`` for none.
        polygons: Object targets' polygons; on a mapped farm's patch the predicted mask is
            the mapped farms of ``polygons`` (none when not given).

    Raises:
        MissingArtifactError: the patch image is missing.
        RasterError: it cannot be read.
    """
    files = paths.patch_files(pid)
    if not files.image.is_file():
        raise MissingArtifactError(f"patch {pid}", files.image, f"fetch RUN={cfg.run.name}")
    image, grid, bands = read_image(files.image)
    scl = read_band(files.scl, grid)
    if scl is not None and not scl.any():
        scl = None  # all nodata: fall back to spectral tests
    labels = read_band(files.labels, grid)
    if files.predicted_mask is not None:
        predicted = read_band(files.predicted_mask, grid)
    else:
        mapped = [to_grid_crs(g, "EPSG:4326", grid) for g in mapped_farms_on(polygons or {}, grid)]
        predicted = geometries_mask(mapped, grid) if mapped else None
    on_grid = {name: analyst_on_grid(src, grid) for name, src in analyst.items()}
    cues = compute_cues(image, bands, scl, cfg.audit, on_grid)
    return PatchData(
        pid,
        image,
        bands,
        grid,
        valid_pixels(image),
        _bool_or_empty(labels, grid),
        _bool_or_empty(predicted, grid),
        cues,
        () if files.mapped else tuple(read_alternates(paths, pid, grid)),
    )


def read_train_pairs(
    paths: RunPaths, limit: int
) -> Iterator[tuple[np.ndarray, tuple[str, ...], np.ndarray]]:
    """Training patches with a label mask: ``(image (C, H, W), bands, mask (H, W))``.

    A generator: nothing is read until it is iterated. Looks at the first ``limit`` patches of
    the training split of the tiles index; yields nothing when there is no such index.
    """
    tiles = paths.tiles_index
    if not tiles.is_file():
        return
    index = gpd.read_file(tiles, layer="tiles") if tiles.suffix == ".gpkg" else None
    if index is None or "split" not in index.columns:
        return
    for pid in index.loc[index["split"] == "train", "patch_id"].astype(str).tolist()[:limit]:
        if not (paths.image(pid).is_file() and paths.mask(pid).is_file()):
            continue
        image, grid, bands = read_image(paths.image(pid))
        mask = read_band(paths.mask(pid), grid)
        if mask is not None:
            yield image, bands, mask


# -------------------------------------------------------------------------------- computation
def cue_rows(p: PatchData) -> list[dict[str, Any]]:
    """Rows of ``cues.csv`` for one patch (:data:`CUE_COLUMNS`; ``pixels`` -1: not computable)."""
    return [
        {
            "patch_id": p.patch_id,
            "cue": c.name,
            "status": "computed" if c.computable else "not_computable",
            "source": c.source,
            "pixel_share": c.share(p.valid),
            "pixels": int((c.mask & p.valid).sum()) if c.mask is not None else -1,
            "reason": c.reason,
        }
        for c in p.cues.values()
    ]


def target_mask(kind: str, target_id: str, p: PatchData, polygons: Polygons) -> np.ndarray | None:
    """The target's ``(H, W)`` bool region on patch ``p``.

    An object target (:data:`FARM_TARGETS`) is its polygon rasterized on the patch grid
    (``None`` when its polygon is unknown); ``predicted_mask`` is the patch's predicted mask;
    any other target (the whole patch) is every pixel.
    """
    if kind in FARM_TARGETS:
        geom = polygons.get((kind, target_id))
        if geom is None:
            return None
        return geometries_mask([to_grid_crs(geom, "EPSG:4326", p.grid)], p.grid)
    if kind == "predicted_mask":
        return p.predicted
    return np.ones(p.grid.shape, dtype=bool)
