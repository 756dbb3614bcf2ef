"""audit stage: does the model lean on snow, cloud or water? Attribution points, a counterfactual
proves.

Reads the attribution index and rasters, the patches (and SCL), label and predicted masks, the
farm polygons and the model (for ``mapped_farms`` targets: the map stage's farm patches and
``map/farms.gpkg``). Each patch is measured in one Dask task on the ``compute:`` cluster.
Writes (all under ``audit/``): ``cues.csv`` (per patch and cue:
pixel share or "not computable" and why), ``reliance.csv`` (per patch x method x target x
cue), ``run_flags.csv`` (per method x target kind x cue, pooled over patches with bootstrap CIs),
``flags.csv`` / ``flags.gpkg`` (one row per farm target and cue, with the inpainting and, where
another acquisition shows the cue's pixels clear, the real-background counterfactual and the
verdict), with ``audit.concepts`` the model-level concept tests ``concepts.csv`` /
``concepts.json``, ``sanity.json`` (model and data randomization), ``faithfulness.csv`` and
``faithfulness_curves.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.audit.concepts import CONCEPT_COLUMNS, run_concepts
from pipeline.audit.explainers import CheckSetup, make_explainer
from pipeline.audit.faithfulness import run_faithfulness
from pipeline.audit.flags import (
    check_thresholds,
    farm_table,
    flag_table,
    run_summary,
    write_flags_gpkg,
)
from pipeline.audit.model_access import ModelAccess, load_model_access
from pipeline.audit.patches import (
    FARM_TARGETS,
    read_analyst_cues,
    read_attribution_index,
    read_farm_polygons,
    read_mapped_relations,
    read_train_pairs,
)
from pipeline.audit.reliance import farm_level, run_level
from pipeline.audit.sanity import MAX_TRAIN_PATCHES, check_cases, check_inputs, run_sanity
from pipeline.audit.scan import Scan, ScanSetup, scan_patches
from pipeline.audit.tasks import counterfactual_rows, row_key, run_counterfactuals
from pipeline.compute import open_client
from pipeline.config import RunConfig
from pipeline.geo.styles import style_path
from pipeline.io import atomic_path, sha256_file, write_json
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]


def _flags(
    client: Any, scan: Scan, per_method: Rows, cfg: RunConfig, paths: RunPaths
) -> pd.DataFrame:
    """The flag table; a farm's counterfactual runs on every patch holding part of it."""
    scope = cfg.audit.counterfactual_scope
    rows = counterfactual_rows(per_method, scope)
    model = (paths, sha256_file(paths.model) if rows else "", cfg.compute.threads_per_worker)
    done = run_counterfactuals(client, rows, scan, cfg.audit, model, cfg.compute.retries)
    return flag_table(per_method, lambda row: done[row_key(row)], scope=scope)


def _checks(
    scan: Scan, flags: pd.DataFrame, access: ModelAccess | None, cfg: RunConfig, paths: RunPaths
) -> tuple[dict[str, Any], Rows, Rows]:
    """Sanity and faithfulness of the explanations, on the patches best suited to them."""
    a = cfg.audit
    sanity: dict[str, Any] = {"skipped": "audit.sanity_patches = 0"}
    faith: tuple[Rows, Rows] = ([], [])
    if access is None:
        return sanity, *faith
    chosen = check_inputs(scan.farm_masks, flags, scan.patches)
    log.info(
        "audit: randomization checks on %d and faithfulness on %d patches",
        min(a.sanity_patches, len(chosen)),
        min(a.faithfulness_patches, len(chosen)),
    )
    explain = make_explainer(cfg.attribute, ig_steps=a.sanity_ig_steps)
    setup = CheckSetup(access, explain, a, cfg.run.seed)
    if a.sanity_patches:
        cases = check_cases(chosen[: a.sanity_patches], access, a.sanity_crop, whole_patch=True)
        sanity = run_sanity(cases, setup, read_train_pairs(paths, MAX_TRAIN_PATCHES))
    if a.faithfulness_patches:
        cases = check_cases(chosen[: a.faithfulness_patches], access, a.sanity_crop)
        methods = a.faithfulness_methods or cfg.attribute.methods
        faith = run_faithfulness(cases, methods, setup)
    return sanity, *faith


def _concepts(
    scan: Scan, access: ModelAccess | None, cfg: RunConfig, paths: RunPaths
) -> tuple[list[Path], dict[str, str]]:
    """The model-level concept tests (``audit.concepts``): ``concepts.csv`` and ``.json``, and
    each concept's verdict."""
    if access is None or not cfg.audit.concepts:
        return [], {}
    start = time.perf_counter()
    rows, doc = run_concepts(list(scan.patches.values()), access, cfg.audit, cfg.run.seed)
    doc["seconds"] = round(time.perf_counter() - start, 1)
    frame = pd.DataFrame(rows).reindex(columns=list(CONCEPT_COLUMNS))
    written = [_write_csv(paths.concepts_table, frame), write_json(paths.concepts, doc)]
    return written, {c: v["verdict"] for c, v in doc["concepts"].items()}


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Audit every attribution of the run for reliance on cues; check the explanations."""
    a = cfg.audit
    check_thresholds(a.enrichment_threshold, a.min_effect, a.counterfactual_threshold)
    index = read_attribution_index(paths, cfg.run.name)
    analyst = read_analyst_cues(a.cue_files)
    polygons = read_farm_polygons(paths, set(index["target"]))
    with open_client(cfg.compute) as client:
        scan = scan_patches(client, index, ScanSetup(analyst, polygons, cfg, paths))
        per_method = farm_level(scan.stats, FARM_TARGETS.keys(), a, cfg.run.seed)
        flags = _flags(client, scan, per_method, cfg, paths)
    needs_model = a.sanity_patches or a.faithfulness_patches or a.concepts
    access = load_model_access(paths) if needs_model else None
    run_flags = run_level(scan.stats, a, cfg.run.seed)
    sanity, faith_rows, curves = _checks(scan, flags, access, cfg, paths)
    concept_files, concepts = _concepts(scan, access, cfg, paths)

    outputs = [
        _write_csv(paths.cues, pd.DataFrame(scan.cues)),
        _write_csv(paths.reliance, pd.DataFrame(scan.reliance)),
        _write_csv(paths.run_flags, run_flags),
        _write_csv(paths.flags, flags),
        write_flags_gpkg(
            paths.flags_gpkg, farm_table(flags), polygons, read_mapped_relations(paths)
        ),
        style_path(paths.flags_gpkg),
        write_json(paths.sanity, sanity),
        _write_csv(paths.faithfulness, pd.DataFrame(faith_rows)),
        write_json(paths.faithfulness_curves, curves),
        *concept_files,
    ]
    summary = {
        "patches": len(scan.patches),
        "attributions": len(index),
        "reliance_rows": len(scan.reliance),
        "farm_rows": len(flags),
        "cues_not_computable": sum(1 for r in scan.cues if r["status"] == "not_computable"),
        "skipped_rows": dict(scan.skipped),
        "per_cue": run_summary(flags) if len(flags) else {},
        "run_flags": int(run_flags["flagged"].sum()) if len(run_flags) else 0,
        "concepts": concepts,
        "sanity_pass": {
            m: v.get("pass")
            for m, v in sanity.get("model_randomization", {}).get("methods", {}).items()
        },
    }
    return StageOutput(outputs, summary)
