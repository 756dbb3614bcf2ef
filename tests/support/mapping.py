"""Worlds for the map tests: small static STAC catalogs of real COGs, written in code.

A scene's reflectance is a smooth field of map position (so every pixel is known) with planted
farm polygons of a distinct spectrum; its SCL is vegetation with cloud boxes. The stand-in model
is a 1x1 convolution (per pixel), so a map pixel must equal the patch prediction exactly.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pystac
import torch
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from torch import nn

from pipeline.bands import BANDS, EARTH_SEARCH_ASSET, NATIVE_GSD
from pipeline.config import RunConfig
from pipeline.geo.masks import grid_footprint_lonlat, rasterize_mask
from pipeline.geo.raster import Grid, write_cog
from pipeline.mapping.region import MapRequest, map_region
from pipeline.mapping.search import search_area
from pipeline.model.io import Arch, ModelMeta, save_model
from pipeline.paths import RunPaths
from pipeline.stac.assets import signer_for
from pipeline.stac.source import StaticCatalogSource
from pipeline.stages.map import request_for

GROUND = np.array([500, 800, 700, 1500, 2600, 3000, 3200, 3300, 2000, 1200], np.float64)
FARM = np.array([900, 1000, 1100, 1300, 1400, 1500, 1600, 1650, 2600, 2400], np.float64)

EPSG = 32618
X0, Y0 = 600_320.0, 4_200_000.0  # upper-left of the main world's scenes
WIDTH, HEIGHT = 768, 512  # 10 m pixels
CHUNK = 256  # chunk_px of the tests: 2560 m cells
#: The main world's farms: across the column seam x = 604160, across the row seam
#: y = 4198400, and one inside a single chunk.
FARMS = {
    "seam_x": box(603_900, 4_198_800, 604_400, 4_199_300),
    "seam_y": box(606_000, 4_198_200, 606_400, 4_198_600),
    "inside": box(600_800, 4_195_000, 601_100, 4_195_300),
}
#: Chunk 32618_1639_235 is partly cloudy in both acquisitions (not in the same place);
#: chunk 32618_1638_237 is cloudy in both wherever it has data.
CLOUD_A = box(601_600, 4_195_840, 602_368, 4_198_400)  # west 30 % of 1639_235
CLOUD_B = box(602_880, 4_195_840, 604_160, 4_198_400)  # east 50 % of 1639_235
CLOUD_BOTH = box(606_720 - 200, 4_194_880, 608_000, 4_195_840 + 200)
FILLED_CHUNK, GAP_CHUNK = "32618_1639_235", "32618_1638_237"


@dataclass(frozen=True)
class SceneDef:
    """One synthetic item: where, when, and what is planted in it (geometries in its CRS)."""

    item_id: str
    when: str
    epsg: int
    x0: float
    y0: float
    width: int
    height: int
    datatake: str
    gain: float = 1.0
    farms: Sequence[BaseGeometry] = ()
    clouds: Sequence[BaseGeometry] = ()
    smooth: bool = True

    def grid(self, gsd: int) -> Grid:
        k = gsd // 10
        transform = Affine(gsd, 0, self.x0, 0, -gsd, self.y0)
        return Grid(CRS.from_epsg(self.epsg), transform, self.height // k, self.width // k)


def band_data(scene: SceneDef, b: int, band: str) -> np.ndarray:
    grid = scene.grid(NATIVE_GSD[band])
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    x = grid.transform.c + (cols + 0.5) * grid.res
    y = grid.transform.f - (rows + 0.5) * grid.res
    ground = np.full(grid.shape, GROUND[b])
    if scene.smooth:
        ground = ground * (1 + 0.05 * np.sin(x / 700.0) * np.cos(y / 900.0))
    farm = rasterize_mask(list(scene.farms), grid) > 0
    value = np.where(farm, FARM[b], ground) * scene.gain
    return np.clip(value, 1, 10000).astype(np.uint16)


def scl_data(scene: SceneDef) -> np.ndarray:
    grid = scene.grid(20)
    scl = np.full(grid.shape, 4, np.uint8)
    scl[rasterize_mask(list(scene.clouds), grid, all_touched=True) > 0] = 9
    return scl


def write_catalog(root: Path, scenes: Sequence[SceneDef]) -> Path:
    """A static catalog (Earth Search layout) of ``scenes``; returns its ``catalog.json``."""
    catalog = pystac.Catalog(id="map-test", description="map test world")
    collection = pystac.Collection(
        id="sentinel-2-l2a",
        description="test",
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
        ),
    )
    catalog.add_child(collection)
    for scene in scenes:
        folder = root / "items" / scene.item_id
        grid = scene.grid(10)
        footprint = grid_footprint_lonlat(grid)
        item = pystac.Item(
            id=scene.item_id,
            geometry=footprint.__geo_interface__,
            bbox=list(footprint.bounds),
            datetime=pystac.utils.str_to_datetime(scene.when),
            properties={
                "platform": "sentinel-2a",
                "eo:cloud_cover": 5.0,
                "s2:processing_baseline": "05.09",
                "earthsearch:boa_offset_applied": True,
                "s2:datatake_id": scene.datatake,
                "proj:epsg": scene.epsg,
            },
        )
        for b, band in enumerate((*BANDS, "SCL")):
            data = scl_data(scene) if band == "SCL" else band_data(scene, b, band)
            path = write_cog(
                folder / f"{band}.tif",
                data[None],
                scene.grid(NATIVE_GSD[band]),
                band_names=[band],
                nodata=0,
            )
            item.add_asset(EARTH_SEARCH_ASSET[band], pystac.Asset(str(path.resolve())))
        collection.add_item(item)
    catalog.normalize_hrefs(str(root.resolve()) + "/")
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def main_scenes() -> list[SceneDef]:
    """Two acquisitions of one tile: A (later, clouds over CLOUD_A) and B (CLOUD_B)."""
    common = dict(epsg=EPSG, x0=X0, y0=Y0, width=WIDTH, height=HEIGHT, farms=list(FARMS.values()))
    return [
        SceneDef(
            "S2A_T_20230712",
            "2023-07-12T10:00:00Z",
            datatake="A",
            clouds=[CLOUD_A, CLOUD_BOTH],
            **common,
        ),
        SceneDef(
            "S2B_T_20230702",
            "2023-07-02T10:00:00Z",
            datatake="B",
            gain=1.02,
            clouds=[CLOUD_B, CLOUD_BOTH],
            **common,
        ),
    ]


# the stand-in model ----------------------------------------------------------------------
class PixelModel(nn.Module):
    """A 1x1 convolution: dark visible / bright SWIR (a farm) -> high logit, per pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(len(BANDS), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def pixel_meta() -> ModelMeta:
    std = np.abs(FARM - GROUND)
    return ModelMeta(
        bands=BANDS,
        mean=tuple(float(v) for v in GROUND),
        std=tuple(float(v) for v in std),
        arch=Arch("pixel", 0, (), len(BANDS), 1),
        threshold=0.5,
    )


def save_pixel_model(path: Path) -> Path:
    model = PixelModel()
    with torch.no_grad():
        model.conv.weight[:] = torch.tensor(np.sign(FARM - GROUND) * 0.8).view(1, -1, 1, 1)
        model.conv.bias[:] = -4.0
    return save_model(path, model, pixel_meta())


def load_pixel_model(path: Path, *, device: Any = "cpu") -> tuple[nn.Module, ModelMeta]:
    """The loader the workers use for the stand-in (as ``load_model`` for the U-Net)."""
    blob = torch.load(path, map_location=device, weights_only=True)
    model = PixelModel()
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), ModelMeta.from_dict(blob["meta"])


# runs ------------------------------------------------------------------------------------
def make_config(data_root: Path, catalog: Path, **map_section: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "run": {"name": "t", "data_root": str(data_root)},
            "labels": {"source": "file", "osm_file": "x.osm.pbf"},
            "fetch": {
                "catalog": str(catalog),
                "provider": "static",
                "datetime": "2023-07-01/2023-07-31",
                "min_clear_fraction": 0.5,
                "retries": 0,
                "backoff_s": 0.01,
                "progress": False,
            },
            "predict": {"window": 128, "overlap": 32, "device": "cpu"},
            "map": {"chunk_px": CHUNK, "halo_px": 32, "farm_patches": False, **map_section},
            "compute": {"workers": 1, "retries": 0},
        }
    )


def write_labels(paths: RunPaths, farms: dict[str, BaseGeometry], epsg: int = EPSG) -> None:
    """``labels/farms.gpkg`` of the planted farms (EPSG:4326)."""
    frame = gpd.GeoDataFrame(
        {"farm_id": list(farms), "osm_id": list(range(1, len(farms) + 1))},
        geometry=list(farms.values()),
        crs=epsg,
    ).to_crs(4326)
    paths.farms.parent.mkdir(parents=True, exist_ok=True)
    frame.to_file(paths.farms, layer="farms", driver="GPKG")


@dataclass
class World:
    """A catalog, a run folder with labels and the stand-in model, and the area."""

    root: Path
    catalog: Path
    area: BaseGeometry
    farms: dict[str, BaseGeometry] = field(default_factory=dict)
    epsg: int = EPSG

    def paths(self, name: str) -> RunPaths:
        return RunPaths(self.root / name, "t")

    def config(self, name: str, **map_section: Any) -> RunConfig:
        return make_config(self.root / name, self.catalog, **map_section)

    def request(self, name: str, **map_section: Any) -> tuple[MapRequest, RunPaths]:
        cfg = self.config(name, **map_section)
        paths = self.paths(name)
        shared = self.root / "model.pt"  # one file: torch.save is not byte-reproducible
        if not shared.is_file():
            save_pixel_model(shared)
        paths.model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, paths.model)
        write_labels(paths, self.farms, self.epsg)
        request = request_for(cfg, paths, self.area, loader=load_pixel_model)
        return request, paths


def run_map(world: World, name: str, client: Any, **kwargs: Any) -> tuple[RunPaths, dict]:
    """Map the world's area into run ``name`` on ``client`` with the stand-in model."""
    map_section = kwargs.pop("map_section", {})
    request, paths = world.request(name, **map_section)
    items = search_area(StaticCatalogSource(str(world.catalog)), request.query)
    labels = gpd.read_file(paths.farms)
    _, summary = map_region(request, items, paths, client, signer_for("static"), labels, **kwargs)
    return paths, summary
