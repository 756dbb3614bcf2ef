"""Stages are data: one explicit mapping, one signature, one runner.

Every stage is ``run(cfg, paths) -> StageOutput``. :func:`run_stage` checks its upstream
manifests, skips it when its config digest and inputs are unchanged, times it and writes
``<run>/<stage>/manifest.json`` atomically. The CLI, the Makefile, notebooks and tests all
go through :data:`STAGES` and :func:`run_stage`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import RunConfig, config_digest
from pipeline.errors import MissingArtifactError
from pipeline.io import write_json
from pipeline.manifest import Manifest, manifest_digest, package_versions
from pipeline.paths import RunPaths, world_dir
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)

StageFn = Callable[[RunConfig, RunPaths], StageOutput]


# Stage modules import torch, captum and friends; import them only when the stage runs, so
# `--help` and up-to-date checks stay fast.
def _labels(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import labels

    return labels.run(cfg, paths)


def _fetch(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import fetch

    return fetch.run(cfg, paths)


def _tiles(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import tiles

    return tiles.run(cfg, paths)


def _train(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import train

    return train.run(cfg, paths)


def _map(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import map as map_stage

    return map_stage.run(cfg, paths)


def _predict(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import predict

    return predict.run(cfg, paths)


def _attribute(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import attribute

    return attribute.run(cfg, paths)


def _audit(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import audit

    return audit.run(cfg, paths)


def _report(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    from pipeline.stages import report

    return report.run(cfg, paths)


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
    """

    name: str
    run: StageFn
    needs: tuple[str, ...]
    sections: tuple[str, ...]
    reads: str
    writes: str
    uses_world: bool = False


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "labels",
            _labels,
            (),
            ("labels",),
            "an OSM extract (.osm/.pbf/.bz2) or the Overpass API, and the AOI",
            "labels/farms.gpkg, labels/rejected.gpkg, labels/plan.gpkg, labels/aoi.gpkg",
            uses_world=True,
        ),
        Stage(
            "fetch",
            _fetch,
            ("labels",),
            ("fetch",),
            "labels/plan.gpkg and a STAC API or static catalog of Sentinel-2 L2A",
            "fetch/patches/<id>.tif (10-band uint16 COG), <id>_scl.tif, fetch/index.gpkg",
            uses_world=True,
        ),
        Stage(
            "tiles",
            _tiles,
            ("labels", "fetch"),
            ("tiles",),
            "labels/farms.gpkg and fetch/index.gpkg with its patches",
            "tiles/masks/<id>.tif, tiles/index.gpkg (splits), tiles/band_stats.json",
        ),
        Stage(
            "train",
            _train,
            ("tiles",),
            ("train",),
            "tiles/index.gpkg, the patches and masks, tiles/band_stats.json",
            "train/model.pt, train/checkpoints/, train/logs/",
        ),
        Stage(
            "map",
            _map,
            ("labels", "train"),
            ("map", "predict", "fetch"),
            "train/model.pt, labels/aoi.gpkg (or map.area_*) and the STAC catalog of fetch",
            "map/probability_<epsg>.tif, map/provenance_<epsg>.tif, map/farms.gpkg, "
            "map/gaps.gpkg, map/stac/catalog.json, map/patches/",
            uses_world=True,
        ),
        Stage(
            "predict",
            _predict,
            ("tiles", "train"),
            ("predict",),
            "train/model.pt and the patches in tiles/index.gpkg",
            "predict/prob/<id>.tif, predict/mask/<id>.tif, predict/farms.gpkg, metrics.json",
        ),
        Stage(
            "attribute",
            _attribute,
            ("tiles", "train", "predict"),
            ("attribute",),
            "train/model.pt, the patches, predict/ masks and polygons",
            "attribute/<method>/<target>/<id>.tif (COG), attribute/index.csv",
        ),
        Stage(
            "audit",
            _audit,
            ("tiles", "train", "predict", "attribute"),
            ("audit",),
            "the patches and SCL, attribute/index.csv and its rasters, train/model.pt",
            "audit/reliance.csv, audit/flags.csv, audit/flags.gpkg",
        ),
        Stage(
            "report",
            _report,
            ("tiles", "predict", "attribute", "audit"),
            ("report",),
            "every earlier stage's outputs",
            "report/index.html (self-contained), report/*.qml",
        ),
    )
}


def world_manifest(cfg: RunConfig) -> Path | None:
    """Manifest of the demo world this run reads, or ``None`` for a real data source."""
    if cfg.world is None:
        return None
    return world_dir(cfg.run.data_root, cfg.world.name) / "manifest.json"


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
        paths.stage_dir(name) / "config.json",
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
    log.info("%s done in %.1f s -> %s", name, manifest.seconds, paths.stage_dir(name))
    return manifest
