"""attribute stage: explain every configured target of every patch with every method.

Reads ``train/model.pt``, ``tiles/index.gpkg`` with its patches, and (when present) the
predicted masks and object layers of ``predict/`` and ``labels/``. Writes one float32 COG per
(patch, method, target[, object]) under ``attribute/<method>/<target>/``, the index CSV, the
per-farm GeoPackage ``attribute/farms.gpkg``, PNG quicklooks under ``attribute/quicklooks/``
and, when ``attribute.stitch`` is set, mosaics under ``attribute/scene/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import torch

from pipeline.attribution.export import attribution_tags, gap_flag, write_attribution
from pipeline.attribution.layers import ObjectLayer, read_layer
from pipeline.attribution.methods import AttributionResult, explain
from pipeline.attribution.objects import polygon_target, region_mass, ring_mask
from pipeline.attribution.quicklook import write_quicklook
from pipeline.attribution.stitch import stitch, union_grid
from pipeline.attribution.superpixels import slic_superpixels
from pipeline.attribution.targets import Target, patch_target, predicted_mask_target
from pipeline.bands import BANDS, band_index
from pipeline.config import RunConfig
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import AttributionError, MissingArtifactError, PipelineError
from pipeline.geo.raster import Grid, read_patch, read_raster, write_cog
from pipeline.io import atomic_path, sha256_file
from pipeline.model.io import check_bands, load_model, normalize
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)

INDEX_COLUMNS = (
    "patch_id",
    "method",
    "target",
    "target_id",
    "path",
    "score",
    "baseline_score",
    "completeness_gap",
    "gap_flag",
    "seconds",
    "target_pixels",
    "status",
    "reason",
)
OBJECT_TARGETS = ("predicted_farms", "label_farms", "false_positives", "missed_farms")
SUPERPIXEL_METHODS = frozenset({"kernel_shap", "shapley_sampling", "lshapley"})


@dataclass
class Ledger:
    """Rows of the index and the farm table, and counts for the manifest summary."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    farms: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    skips: Counter[str] = field(default_factory=Counter)
    quicklooks: Counter[tuple[str, str]] = field(default_factory=Counter)
    agreement: list[float] = field(default_factory=list)
    explained: Counter[str] = field(default_factory=Counter)

    def skip(
        self,
        patch_id: str,
        method: str,
        target: str,
        target_id: str,
        reason: str,
        status: str = "skipped",
    ) -> None:
        level = logging.DEBUG if reason.startswith("budget:") else logging.WARNING
        log.log(level, "attribute %s %s %s/%s: %s", patch_id, method, target, target_id, reason)
        self.skips[reason.split(":")[0][:80]] += 1
        self.rows.append(
            {
                "patch_id": patch_id,
                "method": method,
                "target": target,
                "target_id": target_id,
                "path": "",
                "status": status,
                "reason": reason,
            }
        )


def derive_seed(seed: int, *parts: str) -> int:
    """A 31-bit seed from the run seed and names (stable across runs and platforms)."""
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def safe_name(text: str) -> str:
    """``text`` with characters unsafe in file names replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


def attribution_path(paths: RunPaths, patch_id: str, method: str, target: Target) -> Path:
    """``paths.attribution`` for patch targets; ``<pid>__<target_id>.tif`` for objects."""
    base = paths.attribution(patch_id, method, target.name)
    if not target.target_id:
        return base
    return base.with_name(f"{patch_id}__{safe_name(target.target_id)}.tif")


def read_tiles(paths: RunPaths, cfg: AttributeConfig) -> pd.DataFrame:
    """The patches to explain: tiles index rows of the configured splits, by patch id."""
    if not paths.tiles_index.is_file():
        raise MissingArtifactError("the tiles index", paths.tiles_index, "tiles")
    frame = pyogrio.read_dataframe(paths.tiles_index, layer="tiles", read_geometry=False)
    frame = frame[frame["split"].isin(cfg.splits)].sort_values("patch_id")
    if cfg.max_patches is not None:
        frame = frame.head(cfg.max_patches)
    return frame.reset_index(drop=True)


def object_layers(cfg: AttributeConfig, paths: RunPaths, ledger: Ledger) -> dict[str, ObjectLayer]:
    """Every configured object layer that could be read (the others are recorded as skips)."""
    sources: dict[str, Path | None] = {
        "predicted_farms": paths.predicted_farms,
        "label_farms": paths.farms,
        "false_positives": paths.stage_dir("predict") / "false_positives.gpkg",
        "missed_farms": paths.stage_dir("predict") / "missed.gpkg",
    }
    wanted: dict[str, Path | None] = {k: v for k, v in sources.items() if k in cfg.targets}
    if cfg.analyst_polygons is not None:
        wanted["polygon"] = cfg.analyst_polygons
    layers: dict[str, ObjectLayer] = {}
    for kind, path in wanted.items():
        layer, reason = read_layer(kind, path)
        if layer is None:
            ledger.skip("*", "*", kind, "*", f"object layer unavailable: {reason}")
        else:
            layers[kind] = layer
    return layers


def patch_targets(
    cfg: AttributeConfig,
    model: torch.nn.Module,
    x: torch.Tensor,
    threshold: float,
    patch_id: str,
    grid: Grid,
    layers: dict[str, ObjectLayer],
    ledger: Ledger,
) -> list[tuple[Target, Any]]:
    """The targets of one patch with their polygon (patch CRS) or ``None``."""
    out: list[tuple[Target, Any]] = []
    for name in cfg.targets:
        try:
            if name == "predicted_mask":
                out.append((predicted_mask_target(model, x, threshold), None))
            elif name == "patch":
                out.append((patch_target(*grid.shape), None))
        except AttributionError as err:
            for method in cfg.methods:
                ledger.skip(patch_id, method, name, "", str(err))
    for kind, layer in layers.items():
        rows = layer.for_patch(patch_id, grid)
        if len(rows) > cfg.max_objects_per_patch:
            ledger.skip(
                patch_id,
                "*",
                kind,
                "*",
                f"max_objects_per_patch: {len(rows)} objects, "
                f"first {cfg.max_objects_per_patch} explained",
            )
            rows = rows.head(cfg.max_objects_per_patch)
        for target_id, geom in zip(rows["target_id"], rows.geometry, strict=True):
            try:
                out.append((polygon_target(kind, target_id, geom, grid), geom))
            except AttributionError as err:
                for method in cfg.methods:
                    ledger.skip(patch_id, method, kind, str(target_id), str(err))
    return out


def check_agreement(paths: RunPaths, patch_id: str, target: Target, ledger: Ledger) -> None:
    """IoU of the recomputed predicted-mask target with predict's mask (when it exists)."""
    path = paths.predicted_mask(patch_id)
    if target.name != "predicted_mask" or not path.is_file():
        return
    try:
        mask = read_raster(path)[0][0] > 0
    except PipelineError as err:
        log.warning("cannot read %s for the agreement check: %s", path, err)
        return
    ours = target.mask.numpy()
    if mask.shape == ours.shape:
        union = (mask | ours).sum()
        ledger.agreement.append(float((mask & ours).sum() / union) if union else 1.0)


@dataclass(frozen=True)
class PatchInput:
    """One patch as the stage sees it."""

    patch_id: str
    array: np.ndarray
    grid: Grid
    tags: dict[str, str]
    x: torch.Tensor
    valid: np.ndarray


def export_result(
    result: AttributionResult,
    patch: PatchInput,
    geom: Any,
    seconds: float,
    cfg: RunConfig,
    paths: RunPaths,
    model_sha: str,
    ledger: Ledger,
) -> None:
    """Write the COG (and quicklook, farm row) of one result; add its index row."""
    acfg = cfg.attribute
    target = result.target
    path = attribution_path(paths, patch.patch_id, result.method, target)
    stac_ids = json.loads(patch.tags.get("stac_item_ids", "[]") or "[]")
    tags = attribution_tags(
        result,
        patch_id=patch.patch_id,
        model_sha256=model_sha,
        stac_item_ids=stac_ids,
        gap_tolerance=acfg.gap_tolerance,
    )
    write_attribution(path, result, patch.grid, tags=tags, valid=patch.valid)
    ledger.outputs.append(path)
    flag = gap_flag(result, acfg.gap_tolerance)
    ledger.rows.append(
        {
            "patch_id": patch.patch_id,
            "method": result.method,
            "target": target.name,
            "target_id": target.target_id,
            "path": paths.relative(path),
            "score": result.score,
            "baseline_score": result.baseline_score,
            "completeness_gap": result.completeness_gap,
            "gap_flag": flag,
            "seconds": round(seconds, 4),
            "target_pixels": int(target.mask.sum()),
            "status": "ok",
            "reason": "all-zero attribution" if result.params.get("all_zero") else "",
        }
    )
    key = (result.method, target.name)
    if acfg.quicklooks and ledger.quicklooks[key] < acfg.max_quicklooks:
        ledger.quicklooks[key] += 1
        rgb = patch.array[[band_index(b) for b in ("B04", "B03", "B02")]]
        signed = result.params.get("reduction") == "sum" and result.method != "gradcam"
        png = (
            paths.stage_dir("attribute")
            / "quicklooks"
            / result.method
            / target.name
            / path.with_suffix(".png").name
        )
        write_quicklook(
            png,
            rgb,
            result.aggregate.numpy(),
            signed=signed,
            mask=target.mask.numpy(),
            title=f"{patch.patch_id} {result.method} {target.name} {target.target_id}".strip(),
        )
        ledger.outputs.append(png)
    if geom is not None:
        mass = region_mass(
            result.values.numpy(),
            result.aggregate.numpy(),
            target.mask.numpy(),
            ring_mask(geom, patch.grid, acfg.buffer_m),
            BANDS,
        )
        ledger.farms.append(
            {
                "farm_id": target.target_id,
                "kind": target.name,
                "patch_id": patch.patch_id,
                "method": result.method,
                "mass_inside": mass.inside,
                "mass_ring": mass.ring,
                "mass_outside": mass.outside,
                "share_inside": mass.share_inside,
                "share_ring": mass.share_ring,
                "share_outside": mass.share_outside,
                "top_bands": json.dumps(list(mass.top_bands)),
                "score": result.score,
                "completeness_gap": result.completeness_gap,
                "gap_flag": flag,
                "geometry": gpd.GeoSeries([geom], crs=patch.grid.crs).to_crs(4326).iloc[0],
            }
        )


def load_patch(paths: RunPaths, row: pd.Series, meta: Any, device: torch.device) -> PatchInput:
    pid = str(row["patch_id"])
    rel = row.get("image")
    path = paths.root / rel if isinstance(rel, str) and rel else paths.image(pid)
    array, grid, tags = read_patch(path)
    check_bands(meta, BANDS, path)
    x = normalize(array, meta)[None].to(device)
    return PatchInput(pid, array, grid, tags, x, (array != 0).any(axis=0))


def explain_patch(
    patch: PatchInput,
    model: torch.nn.Module,
    meta: Any,
    cfg: RunConfig,
    paths: RunPaths,
    layers: dict[str, ObjectLayer],
    model_sha: str,
    ledger: Ledger,
) -> None:
    acfg = cfg.attribute
    targets = patch_targets(
        acfg, model, patch.x, meta.threshold, patch.patch_id, patch.grid, layers, ledger
    )
    superpixels = None
    if SUPERPIXEL_METHODS & set(acfg.methods):
        superpixels = slic_superpixels(patch.x, acfg.n_superpixels, acfg.slic_compactness)
    for target, geom in targets:
        check_agreement(paths, patch.patch_id, target, ledger)
        for method in acfg.methods:
            budget = acfg.max_targets.get(method)
            if budget is not None and ledger.explained[method] >= budget:
                reason = f"budget: attribute.max_targets.{method}={budget} reached"
                ledger.skip(patch.patch_id, method, target.name, target.target_id, reason)
                continue
            ledger.explained[method] += 1
            seed = derive_seed(cfg.run.seed, patch.patch_id, method, target.name, target.target_id)
            start = time.perf_counter()
            try:
                result = explain(
                    method, model, patch.x, target, acfg, seed=seed, superpixels=superpixels
                )
            except AttributionError as err:
                ledger.skip(patch.patch_id, method, target.name, target.target_id, str(err))
                continue
            export_result(
                result, patch, geom, time.perf_counter() - start, cfg, paths, model_sha, ledger
            )


def write_index(paths: RunPaths, ledger: Ledger) -> Path:
    frame = pd.DataFrame(ledger.rows, columns=list(INDEX_COLUMNS))
    with atomic_path(paths.attribution_index) as tmp:
        frame.to_csv(tmp, index=False)
    return paths.attribution_index


def write_farms(paths: RunPaths, ledger: Ledger) -> Path:
    path = paths.stage_dir("attribute") / "farms.gpkg"
    columns = [
        "farm_id",
        "kind",
        "patch_id",
        "method",
        "mass_inside",
        "mass_ring",
        "mass_outside",
        "share_inside",
        "share_ring",
        "share_outside",
        "top_bands",
        "score",
        "completeness_gap",
        "gap_flag",
        "geometry",
    ]
    frame = gpd.GeoDataFrame(
        pd.DataFrame(ledger.farms, columns=columns), geometry="geometry", crs=4326
    )
    frame["gap_flag"] = (
        frame["gap_flag"].astype(object).map(lambda v: "" if v is None else str(bool(v)).lower())
    )
    with atomic_path(path) as tmp:
        frame.to_file(tmp, layer="farms", driver="GPKG")
    return path


def stitch_scenes(paths: RunPaths, cfg: AttributeConfig, ledger: Ledger) -> dict[str, str]:
    """Mosaic the patch-level attributions per (method, target, CRS); returns skip reasons."""
    notes: dict[str, str] = {}
    ok = [r for r in ledger.rows if r["status"] == "ok" and not r["target_id"]]
    groups: dict[tuple[str, str], list[Path]] = {}
    for row in ok:
        groups.setdefault((row["method"], row["target"]), []).append(paths.root / row["path"])
    for (method, target), files in sorted(groups.items()):
        loaded = [read_raster(f) for f in files]
        by_crs: dict[str, list[tuple[np.ndarray, Grid]]] = {}
        for array, grid, _ in loaded:
            by_crs.setdefault(grid.crs.to_string(), []).append((array, grid))
        for crs, items in by_crs.items():
            key = f"{method}/{target}/{crs}"
            out = union_grid([g for _, g in items])
            if out.height * out.width > cfg.stitch_max_pixels:
                notes[key] = f"mosaic of {out.height}x{out.width} exceeds stitch_max_pixels"
                continue
            mosaic, out = stitch([a for a, _ in items], [g for _, g in items], out)
            name = safe_name(crs.replace(":", ""))
            dest = paths.stage_dir("attribute") / "scene" / method / target / f"{name}.tif"
            write_cog(
                dest,
                mosaic,
                out,
                band_names=(*BANDS, "aggregate"),
                nodata=float("nan"),
                tags={"method": method, "target": target, "patches": len(items), "blend": "hann"},
            )
            ledger.outputs.append(dest)
    return notes


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Explain the configured targets of every patch; see the module docstring."""
    acfg = cfg.attribute
    if not paths.model.is_file():
        raise MissingArtifactError("the trained model", paths.model, "train")
    from pipeline.model.window import resolve_device

    device = resolve_device(acfg.device)
    model, meta = load_model(paths.model, device=device)
    model_sha = sha256_file(paths.model)
    tiles = read_tiles(paths, acfg)
    ledger = Ledger()
    layers = object_layers(acfg, paths, ledger)
    patches_done = 0
    for _, row in tiles.iterrows():
        try:
            patch = load_patch(paths, row, meta, device)
        except PipelineError as err:
            ledger.skip(
                str(row["patch_id"]), "*", "*", "*", f"patch unreadable: {err}", status="failed"
            )
            continue
        explain_patch(patch, model, meta, cfg, paths, layers, model_sha, ledger)
        patches_done += 1
    stitch_notes = stitch_scenes(paths, acfg, ledger) if acfg.stitch else {}
    outputs = [*ledger.outputs, write_index(paths, ledger), write_farms(paths, ledger)]
    statuses = Counter(r["status"] for r in ledger.rows)
    flags = sum(1 for r in ledger.rows if r.get("gap_flag") is True)
    summary = {
        "patches": patches_done,
        "patches_in_index": len(tiles),
        "attributions": statuses.get("ok", 0),
        "skipped": statuses.get("skipped", 0),
        "failed": statuses.get("failed", 0),
        "skip_reasons": dict(ledger.skips),
        "gap_flags": flags,
        "farm_rows": len(ledger.farms),
        "methods": list(acfg.methods),
        "targets": list(acfg.targets),
        "object_layers": sorted(layers),
        "device": str(device),
        "model_sha256": model_sha,
        "quicklooks": int(sum(ledger.quicklooks.values())),
        "stitch_skips": stitch_notes,
        "predicted_mask_iou_with_predict": (
            round(float(np.mean(ledger.agreement)), 4) if ledger.agreement else None
        ),
    }
    return StageOutput(outputs=outputs, summary=summary)
