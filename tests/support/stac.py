"""Fixtures of the fetch tests: synthetic Sentinel-2 scenes as real COGs, served over HTTP.

Reflectance ``R`` (x 10000) is a known function of map position, so every output pixel has a
known expected value:

* 10 m bands: ``R10(b, x, y) = 600 + 100 b + ((x - X0) / 10) % 50 * 3 + ((y0 - y) / 10) % 40 * 2``
  evaluated at 10 m pixel centres;
* 20 m bands: linear ramps ``R20(b, col20, row20) = 1500 + 50 b + 4 col20 + 4 row20`` in the
  scene's 20 m pixel indices, so bilinear resampling onto the 10 m grid is exact in the interior:
  at 10 m scene indices ``(i, j)``, ``R = 1500 + 50 b + 2 i + 2 j - 2``.

A scene's stored DN is ``R + offset`` where the catalog has not removed the +1000 offset.
The loopback server runs in a child process (see :mod:`pipeline.testing.stac_server`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from shapely.geometry import box, mapping

from pipeline.bands import BANDS, EARTH_SEARCH_ASSET, NATIVE_GSD
from pipeline.config import RunConfig
from pipeline.geo.plan import PlannedPatch, PlanParams, plan_frame, plan_row
from pipeline.geo.raster import Grid, write_cog
from pipeline.paths import RunPaths
from pipeline.testing.stac_server import ServerProcess, spawn_server

EPSG = 32618
X0, Y0 = 600_000.0, 4_200_000.0  # upper-left of the synthetic world
SIDE = 512  # 10 m pixels per scene side
REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata" / "stac"
REALDATA = REALDATA.resolve()
ES_ITEM = REALDATA / "earth-search-v1_item_sentinel-2-l2a_S2A_13TDE_20231008_0_L2A.json"
PC_ITEM = REALDATA / (
    "planetary-computer_item_sentinel-2-l2a_"
    "S2A_MSIL2A_20190101T000001_R116_T60VUK_20201007T214652.json"
)
ES_PAGE1 = REALDATA / "earth-search-v1_POST_search_cql2-filter_eo-cloud-cover-lte-40_page1.json"

TO_LONLAT = Transformer.from_crs(EPSG, 4326, always_xy=True)


def to_lonlat(geom: Any) -> Any:
    """A UTM 18N geometry in EPSG:4326."""
    return shapely.transform(
        geom, lambda xy: np.column_stack(TO_LONLAT.transform(xy[:, 0], xy[:, 1]))
    )


def reflectance_10m(band: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Expected R of a 10 m band at world 10 m pixel indices (rows, cols from X0/Y0)."""
    return (600 + 100 * band + (cols % 50) * 3 + (rows % 40) * 2).astype(np.int32)


def reflectance_20m(band: int, rows10: np.ndarray, cols10: np.ndarray) -> np.ndarray:
    """Expected bilinear R of a 20 m band at world 10 m pixel indices (interior pixels)."""
    return (1500 + 50 * band + 2 * rows10 + 2 * cols10 - 2).astype(np.int32)


def expected_patch(x0: float, y0: float, size: int = 256) -> np.ndarray:
    """``(10, size, size)`` expected reflectance of a patch with upper-left (x0, y0)."""
    r0, c0 = int((Y0 - y0) / 10), int((x0 - X0) / 10)
    rows, cols = np.mgrid[r0 : r0 + size, c0 : c0 + size]
    out = []
    for b, band in enumerate(BANDS):
        f = reflectance_10m if NATIVE_GSD[band] == 10 else reflectance_20m
        out.append(f(b, rows, cols))
    return np.stack(out)


@dataclass(frozen=True)
class SceneSpec:
    """One synthetic item: extent in world 10 m pixels, DN offset, SCL painter."""

    name: str
    col0: int = 0
    row0: int = 0
    width: int = SIDE
    height: int = SIDE
    offset: int = 0
    scl: str = "clear"  # clear | cloudy | snow


def paint_scl(kind: str, h20: int, w20: int) -> np.ndarray:
    scl = np.full((h20, w20), 4, dtype=np.uint8)  # vegetation
    scl[:, : w20 // 4] = 5  # not vegetated
    if kind == "cloudy":
        scl[:] = 9
    elif kind == "snow":
        scl[: h20 // 4, : w20 // 4] = 11  # a snow block in the upper-left 1/16
    return scl


def write_scene(folder: Path, spec: SceneSpec) -> dict[str, Path]:
    """Write one COG per band + SCL for ``spec``; returns ``{band: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for b, band in enumerate((*BANDS, "SCL")):
        gsd = NATIVE_GSD[band]
        k = gsd // 10
        h, w = spec.height // k, spec.width // k
        transform = Affine(gsd, 0, X0 + spec.col0 * 10, 0, -gsd, Y0 - spec.row0 * 10)
        grid = Grid(CRS.from_epsg(EPSG), transform, h, w)
        if band == "SCL":
            data = paint_scl(spec.scl, h, w)
        elif gsd == 10:
            rows, cols = np.mgrid[spec.row0 : spec.row0 + h, spec.col0 : spec.col0 + w]
            data = (reflectance_10m(b, rows, cols) + spec.offset).astype(np.uint16)
        else:
            rows, cols = np.mgrid[
                spec.row0 // 2 : spec.row0 // 2 + h, spec.col0 // 2 : spec.col0 // 2 + w
            ]
            data = (1500 + 50 * b + 4 * cols + 4 * rows + spec.offset).astype(np.uint16)
        path = folder / f"{spec.name}_{band}.tif"
        write_cog(path, data[None], grid, band_names=[band], nodata=0)
        out[band] = path
    return out


def footprint(spec: SceneSpec) -> dict[str, Any]:
    poly = box(
        X0 + spec.col0 * 10,
        Y0 - (spec.row0 + spec.height) * 10,
        X0 + (spec.col0 + spec.width) * 10,
        Y0 - spec.row0 * 10,
    )
    return mapping(to_lonlat(poly))


def es_item(
    spec: SceneSpec,
    hrefs: dict[str, str],
    when: str,
    *,
    datatake: str,
    template: dict[str, Any] | None = None,
    boa_applied: bool = True,
    baseline: str = "05.09",
    collection: str = "sentinel-2-l2a",
) -> dict[str, Any]:
    """An Earth Search v1 item (from the real document when given) pointing at ``hrefs``."""
    if template is None:
        assets = {EARTH_SEARCH_ASSET[b]: {"href": "", "type": "image/tiff"} for b in hrefs}
        item: dict[str, Any] = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "assets": assets,
            "links": [],
            "properties": {"platform": "sentinel-2a"},
            "stac_extensions": [],
        }
    else:
        item = copy.deepcopy(template)
    item.update(id=f"ES_{spec.name}", collection=collection, geometry=footprint(spec))
    item["bbox"] = list(gpd.GeoSeries.from_xy([0], [0]).total_bounds)  # replaced below
    from shapely.geometry import shape

    item["bbox"] = list(shape(item["geometry"]).bounds)
    props = item["properties"]
    props.update(
        {
            "datetime": when,
            "s2:processing_baseline": baseline,
            "proj:epsg": EPSG,
            "eo:cloud_cover": 10.0,
            "s2:datatake_id": datatake,
            "earthsearch:boa_offset_applied": boa_applied,
        }
    )
    if collection == "sentinel-2-c1-l2a":
        props.pop("earthsearch:boa_offset_applied", None)
    for band, href in hrefs.items():
        item["assets"][EARTH_SEARCH_ASSET[band]]["href"] = href
    item["links"] = []
    return item


def pc_item(
    spec: SceneSpec,
    hrefs: dict[str, str],
    when: str,
    *,
    datatake: str,
    template: dict[str, Any],
    baseline: str,
) -> dict[str, Any]:
    """A Planetary Computer item (from the real document) pointing at ``hrefs``."""
    from shapely.geometry import shape

    item = copy.deepcopy(template)
    item.update(id=f"PC_{spec.name}", collection="sentinel-2-l2a", geometry=footprint(spec))
    item["bbox"] = list(shape(item["geometry"]).bounds)
    item["properties"].update(
        {
            "datetime": when,
            "s2:processing_baseline": baseline,
            "proj:epsg": EPSG,
            "eo:cloud_cover": 10.0,
            "s2:datatake_id": datatake,
        }
    )
    for band, href in hrefs.items():
        item["assets"][band]["href"] = href
    item["links"] = []
    return item


def load_real(path: Path) -> dict[str, Any]:
    if not path.is_file():
        pytest.skip(f"real STAC documents not present ({path}); see ../shared/realdata/README.md")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def c1_template() -> dict[str, Any]:
    page = load_real(ES_PAGE1)
    for feature in page["features"]:
        if feature["collection"] == "sentinel-2-c1-l2a":
            return feature
    pytest.skip("no sentinel-2-c1-l2a item in the recorded Earth Search page")
    raise AssertionError  # unreachable


def collection_doc(cid: str) -> dict[str, Any]:
    return {
        "type": "Collection",
        "id": cid,
        "stac_version": "1.0.0",
        "description": cid,
        "license": "proprietary",
        "links": [],
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [[None, None]]},
        },
    }


def write_plan(path: Path, patches: list[tuple[str, float, float]]) -> Path:
    """A plan.gpkg with 256 x 256 10 m patches at the given upper-left corners."""
    frame = plan_frame(
        plan_row(pid, PlannedPatch(EPSG, x0, y0, "negative"), PlanParams())
        for pid, x0, y0 in patches
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(path, layer="plan", driver="GPKG")
    return path


def make_config(
    tmp: Path, catalog: str, *, compute: dict[str, Any] | None = None, **fetch: Any
) -> RunConfig:
    """A run config fetching from ``catalog`` (``fetch`` overrides; one local Dask worker
    unless ``compute`` says otherwise)."""
    base = {
        "catalog": catalog,
        "provider": "earth-search",
        "collection": "sentinel-2-l2a",
        "datetime": "2023-01-01/2023-12-31",
        "min_clear_fraction": 0.5,
        "workers": 2,
        "read_threads": 8,
        "retries": 3,
        "backoff_s": 0.05,
        "gdal_retry_delay_s": 0.05,
        "timeout_s": 10,
        "progress": False,
    }
    base.update(fetch)
    return RunConfig.model_validate(
        {
            "run": {"name": "t", "data_root": str(tmp / "data")},
            "labels": {"source": "file", "osm_file": "x.osm.pbf"},
            "fetch": base,
            "compute": compute or {"workers": 1},
        }
    )


def run_paths(cfg: RunConfig) -> RunPaths:
    return RunPaths(cfg.run.data_root, cfg.run.name)


@pytest.fixture(scope="session")
def cog_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of every synthetic scene's COGs (written once per session)."""
    root = tmp_path_factory.mktemp("cogs")
    specs = [
        SceneSpec("plain"),  # DN = R
        SceneSpec("offset", offset=1000),  # DN = R + 1000
        SceneSpec("cloudy", scl="cloudy"),
        SceneSpec("snow", scl="snow"),
        SceneSpec("west", width=SIDE // 2),  # left half of the world
        SceneSpec("east", col0=SIDE // 2, width=SIDE // 2),  # right half
    ]
    for spec in specs:
        write_scene(root, spec)
    return root


@pytest.fixture(scope="session")
def server(cog_root: Path) -> Iterator[ServerProcess]:
    """The loopback STAC API + COG server (a child process), shared by the session."""
    proc = spawn_server(cog_root)
    try:
        yield proc
    finally:
        proc.stop()


def scene_hrefs(server: ServerProcess, name: str, run: str = "") -> dict[str, str]:
    """Loopback URLs of a scene's COGs; a distinct ``run`` makes distinct URLs for the same
    files, so GDAL's in-process cache cannot answer for the server."""
    query = f"?run={run}" if run else ""
    return {band: server.file_url(f"{name}_{band}.tif") + query for band in (*BANDS, "SCL")}


def scene(name: str) -> SceneSpec:
    return {
        "west": SceneSpec("west", width=SIDE // 2),
        "east": SceneSpec("east", col0=SIDE // 2, width=SIDE // 2),
    }.get(name, SceneSpec(name))
