"""Stages are data: one explicit mapping, one signature, one runner.

Every stage is ``run(cfg, paths) -> StageOutput``. :func:`run_stage` checks its upstream
manifests, skips it when its config digest and inputs are unchanged, times it and writes
``<run>/<stage>/manifest.json`` atomically. The CLI, the Makefile, notebooks and tests all
go through :data:`STAGES` and :func:`run_stage`.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipeline.config import RunConfig, config_digest
from pipeline.errors import MissingArtifactError, PipelineError
from pipeline.io import write_json
from pipeline.manifest import Manifest, manifest_digest, package_versions
from pipeline.paths import RunPaths, WorldPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)

StageFn = Callable[[RunConfig, RunPaths], StageOutput]


def _lazy(module: str) -> StageFn:
    """The ``run`` of ``pipeline.stages.<module>``, imported only when the stage runs: stage
    modules import torch, captum and friends, and ``--help`` and up-to-date checks stay fast."""

    def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
        stage = importlib.import_module(f"pipeline.stages.{module}")
        return stage.run(cfg, paths)

    run.__name__ = run.__qualname__ = f"{module}.run"
    return run


@dataclass(frozen=True)
class Stage:
    """A pipeline stage.

    Attributes:
        name: CLI sub-command and Make target.
        run: The stage function.
        needs: Upstream stages whose manifests must exist.
        sections: Config sections whose values the outputs depend on.
        reads: One line for ``--help``: what the stage reads.
        writes: One line for ``--help``: what the stage writes.
        uses_world: Reads the demo world's files when the config has a ``world`` section.
        optional: Upstream stages read when they have run (``map`` for ``mapped_farms``):
            their manifests join the inputs when present, so a re-run makes this stage stale;
            a missing one is no error.
    """

    name: str
    run: StageFn
    needs: tuple[str, ...]
    sections: tuple[str, ...]
    reads: str
    writes: str
    uses_world: bool = False
    optional: tuple[str, ...] = ()


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "labels",
            _lazy("labels"),
            (),
            ("labels",),
            "an OSM extract (.osm/.pbf/.bz2) or the Overpass API, and the AOI",
            "labels/farms.gpkg, labels/rejected.gpkg, labels/plan.gpkg, labels/aoi.gpkg",
            uses_world=True,
        ),
        Stage(
            "fetch",
            _lazy("fetch"),
            ("labels",),
            ("fetch",),
            "labels/plan.gpkg and a STAC API or static catalog of Sentinel-2 L2A",
            "fetch/patches/<id>.tif (10-band uint16 COG), <id>_scl.tif, fetch/index.gpkg",
            uses_world=True,
        ),
        Stage(
            "tiles",
            _lazy("tiles"),
            ("labels", "fetch"),
            ("tiles",),
            "labels/farms.gpkg and fetch/index.gpkg with its patches",
            "tiles/masks/<id>.tif, tiles/index.gpkg (splits), tiles/band_stats.json",
        ),
        Stage(
            "train",
            _lazy("train"),
            ("tiles",),
            ("train",),
            "tiles/index.gpkg, the patches and masks, tiles/band_stats.json",
            "train/model.pt, train/checkpoints/, train/logs/",
        ),
        Stage(
            "map",
            _lazy("map"),
            ("labels", "train"),
            ("map", "predict", "fetch"),
            "train/model.pt, labels/aoi.gpkg (or map.area_*) and the STAC catalog of fetch",
            "map/probability_<epsg>.tif, map/provenance_<epsg>.tif, map/farms.gpkg, "
            "map/gaps.gpkg, map/stac/catalog.json, map/patches/; with map.windows: "
            "map/windows/<name>/, map/timeline.csv, map/timeline.png, map/sites.gpkg",
            uses_world=True,
        ),
        Stage(
            "predict",
            _lazy("predict"),
            ("tiles", "train"),
            ("predict",),
            "train/model.pt and the patches in tiles/index.gpkg",
            "predict/prob/<id>.tif, predict/mask/<id>.tif, predict/farms.gpkg, metrics.json",
        ),
        Stage(
            "attribute",
            _lazy("attribute"),
            ("tiles", "train", "predict"),
            ("attribute",),
            "train/model.pt, the patches, predict/ masks and polygons, map/ farm patches",
            "attribute/<method>/<target>/<id>.tif (COG), attribute/index.csv",
            optional=("map",),
        ),
        Stage(
            "audit",
            _lazy("audit"),
            ("tiles", "train", "predict", "attribute"),
            ("audit",),
            "the patches and SCL, attribute/index.csv and its rasters, train/model.pt",
            "audit/flags.gpkg (one row per farm), audit/flags.csv, audit/reliance.csv",
            optional=("map",),
        ),
        Stage(
            "triage",
            _lazy("triage"),
            ("labels", "predict"),
            ("triage", "map", "predict"),
            "labels/farms.gpkg, map/farms.gpkg (else predict/farms.gpkg), attribute/farms.gpkg "
            "and audit/flags.gpkg when present",
            "triage/review.gpkg (candidates, suspects), triage/review.geojson (review tasks)",
            uses_world=True,
            optional=("map", "attribute", "audit"),
        ),
        Stage(
            "report",
            _lazy("report"),
            ("tiles", "predict", "attribute", "audit"),
            ("report", "triage"),
            "every earlier stage's outputs",
            "report/index.html (self-contained, works offline)",
            optional=("triage",),
        ),
    )
}


def world_manifest(cfg: RunConfig) -> Path | None:
    """Manifest of the demo world this run reads, or ``None`` for a real data source."""
    if cfg.world is None:
        return None
    return WorldPaths(cfg.run.data_root, cfg.world.name).manifest


def _inputs(stage: Stage, cfg: RunConfig, paths: RunPaths) -> dict[str, str]:
    inputs: dict[str, str] = {}
    world = world_manifest(cfg) if stage.uses_world else None
    if world is not None:
        if not world.is_file():
            raise MissingArtifactError("the demo world", world.parent, f"world RUN={cfg.run.name}")
        inputs["world"] = manifest_digest(world)
    for up in stage.needs:
        path = paths.manifest(up)
        if not path.is_file():
            raise MissingArtifactError(
                f"the {up} stage's manifest", path, f"{up} RUN={cfg.run.name}"
            )
        inputs[up] = manifest_digest(path)
    for up in stage.optional:
        if paths.manifest(up).is_file():
            inputs[up] = manifest_digest(paths.manifest(up))
    return inputs


def is_current(name: str, cfg: RunConfig, paths: RunPaths) -> bool:
    """True when ``name`` has a manifest for this config digest and these exact inputs."""
    stage = STAGES[name]
    path = paths.manifest(name)
    if not path.is_file():
        return False
    try:
        old = Manifest.read(path)
        inputs = _inputs(stage, cfg, paths)
    except (MissingArtifactError, ValueError, TypeError, KeyError):
        return False
    return old.config_digest == config_digest(cfg, stage.sections) and old.inputs == inputs


@dataclass(frozen=True)
class StageStatus:
    """Where a stage of a run stands.

    Attributes:
        name: The stage.
        state: ``done`` (current: same config and inputs), ``stale`` (it ran, but its config
            sections or an upstream stage changed since) or ``missing`` (never ran).
        reason: What changed, or when it ran.
    """

    name: str
    state: str
    reason: str


def _changed_sections(name: str, cfg: RunConfig, paths: RunPaths) -> list[str]:
    """The config sections of ``name`` whose values differ from those it last ran with."""
    saved = paths.stage_config(name)
    if not saved.is_file():
        return list(STAGES[name].sections)
    old = json.loads(saved.read_text())
    now = cfg.model_dump(mode="json")
    changed = [s for s in STAGES[name].sections if old.get(s) != now.get(s)]
    seed_changed = old.get("run", {}).get("seed") != cfg.run.seed
    return changed + (["run.seed"] if seed_changed else [])


def stage_status(name: str, cfg: RunConfig, paths: RunPaths) -> StageStatus:
    """Whether stage ``name`` of this run is done, stale (and why) or missing."""
    path = paths.manifest(name)
    if not path.is_file():
        return StageStatus(name, "missing", f"not run yet (make {name})")
    old = Manifest.read(path)
    stage = STAGES[name]
    reasons = []
    if old.config_digest != config_digest(cfg, stage.sections):
        changed = _changed_sections(name, cfg, paths) or list(stage.sections)
        reasons.append("config changed: " + ", ".join(changed))
    world = world_manifest(cfg) if stage.uses_world else None
    if world is not None and old.inputs.get("world") != (
        manifest_digest(world) if world.is_file() else None
    ):
        reasons.append("the demo world changed")
    for up in stage.needs:
        up_path = paths.manifest(up)
        if not up_path.is_file():
            reasons.append(f"{up} is missing")
        elif old.inputs.get(up) != manifest_digest(up_path):
            reasons.append(f"{up} ran again since")
    for up in stage.optional:
        up_path = paths.manifest(up)
        now = manifest_digest(up_path) if up_path.is_file() else None
        if old.inputs.get(up) != now:
            reasons.append(f"{up} ran (or was removed) since")
    if reasons:
        return StageStatus(name, "stale", "; ".join(reasons))
    when = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    return StageStatus(name, "done", f"{when}, {old.seconds:.0f} s")


def run_status(cfg: RunConfig) -> list[StageStatus]:
    """:func:`stage_status` of every stage of the run, in order; a stage whose upstream stage
    is stale or missing is stale too (re-running the run would re-run it)."""
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    out: dict[str, StageStatus] = {}
    for name in STAGES:
        st = stage_status(name, cfg, paths)
        behind = [up for up in STAGES[name].needs if out[up].state != "done"]
        if st.state == "done" and behind:
            st = StageStatus(name, "stale", f"upstream not current: {', '.join(behind)}")
        out[name] = st
    return list(out.values())


def run_stage(name: str, cfg: RunConfig, *, force: bool = False) -> Manifest:
    """Run one stage (unless current), write its manifest, and return it.

    Raises:
        MissingArtifactError: an upstream manifest is missing (names the make target).
        PipelineError: whatever the stage raises for bad input.
    """
    stage = STAGES[name]
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    inputs = _inputs(stage, cfg, paths)
    if not force and is_current(name, cfg, paths):
        log.info("%s is up to date (config and inputs unchanged); use --force to re-run", name)
        paths.manifest(name).touch()  # newer than its prerequisites, for make
        return Manifest.read(paths.manifest(name))
    paths.stage_dir(name).mkdir(parents=True, exist_ok=True)
    write_json(
        paths.stage_config(name),
        {s: cfg.model_dump(mode="json")[s] for s in ("run", *stage.sections)},
    )
    start = time.perf_counter()
    result = stage.run(cfg, paths)
    manifest = Manifest(
        stage=name,
        config_digest=config_digest(cfg, stage.sections),
        inputs=inputs,
        outputs=sorted(paths.relative(p) for p in result.outputs),
        versions=package_versions(),
        seconds=round(time.perf_counter() - start, 3),
        summary=result.summary,
    )
    manifest.write(paths.manifest(name))
    update_catalog(cfg, paths)
    log.info("%s done in %.1f s -> %s", name, manifest.seconds, paths.stage_dir(name))
    return manifest


def update_catalog(cfg: RunConfig, paths: RunPaths) -> None:
    """Rewrite the run's STAC catalog (:mod:`pipeline.stac.run_catalog`) after a stage; a
    failure is logged, never fails the finished stage."""
    from pipeline.stac.run_catalog import write_run_catalog

    try:
        write_run_catalog(cfg, paths)
    except (PipelineError, OSError, ValueError, KeyError) as err:
        log.warning("the run catalog %s was not updated: %s", paths.catalog, err)
