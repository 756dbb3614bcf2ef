"""One patch through the attribute stage: its targets, every method on each, files and rows.

:func:`explain_patch` lists a patch's targets (the predicted mask and the whole patch, frozen
from the unperturbed input, and every object of each layer on the patch), explains each with
every configured method, writes each attribution's COG (and quicklook), and returns the
:class:`~pipeline.attribution.ledger.PatchRecords` of the patch: index rows, farm rows and skips.
Run-wide caps (``attribute.max_targets`` per method, ``max_quicklooks`` per method and target)
are counted by :class:`Quotas` over the patches in order (:func:`allot`), from the target keys
of each patch (:func:`target_keys`), before any patch is explained: each patch then gets its
:class:`Allowance`, so patches can be explained in any order, on any worker, with the same
result. A patch cut around a mapped farm (``mapped``) has that farm as its only target.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import torch
from shapely.geometry.base import BaseGeometry
from torch import nn

from pipeline.attribution.export import attribution_tags, gap_flag, write_attribution
from pipeline.attribution.layers import OWN_PATCH, ObjectLayer, read_layers
from pipeline.attribution.ledger import (
    PatchRecords,
    Skip,
    combine,
    farm_row,
    result_row,
    skip_records,
)
from pipeline.attribution.methods import METHODS, AttributionResult, explain, superpixel_methods
from pipeline.attribution.objects import polygon_target, region_mass, ring_mask
from pipeline.attribution.quicklook import write_quicklook
from pipeline.attribution.superpixels import slic_superpixels
from pipeline.attribution.targets import Target, patch_target, predicted_mask_target
from pipeline.attribution.temporal import TemporalReference, reference_input
from pipeline.bands import BANDS, band_index
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import AttributionError, PipelineError
from pipeline.geo.raster import Grid, read_patch, read_raster
from pipeline.model.io import ModelMeta, check_bands, normalize
from pipeline.paths import RunPaths
from pipeline.stac.alternates import read_alternates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchInput:
    """One patch as the attribute stage explains it.

    Attributes:
        patch_id: Plan id.
        array: ``(C, H, W)`` uint16 stored DN (reflectance x 10000, 0 = nodata).
        grid: The patch grid (CRS and transform copied to every attribution raster).
        tags: The patch COG's tags (``stac_item_ids``, ...).
        x: ``(1, C, H, W)`` normalized input on the model's device.
        valid: ``(H, W)`` bool, pixels with data in some band.
        mapped: A mapped farm's patch (``map/patches/``): its farm is its only target.
        predicted: ``(H, W)`` bool mask the model predicts on ``x`` when already computed
            (:func:`target_keys` returns it), else ``None``.
        reference: The patch on a cue-free date (``attribute.baseline: temporal``), or
            ``None`` when not asked for.
    """

    patch_id: str
    array: np.ndarray
    grid: Grid
    tags: dict[str, str]
    x: torch.Tensor
    valid: np.ndarray
    mapped: bool = False
    predicted: np.ndarray | None = None
    reference: TemporalReference | None = None


def load_patch(
    path: Path, patch_id: str, meta: ModelMeta, device: torch.device, *, mapped: bool = False
) -> PatchInput:
    """Read and normalize one patch COG.

    Raises:
        RasterError: the file is unreadable or its bands are not :data:`BANDS`.
        ModelError: the model expects other bands.
    """
    array, grid, tags = read_patch(path)
    check_bands(meta, BANDS, path)
    x = normalize(array, meta)[None].to(device)
    return PatchInput(patch_id, array, grid, tags, x, (array != 0).any(axis=0), mapped)


def with_reference(
    patch: PatchInput, paths: RunPaths, meta: ModelMeta, cfg: AttributeConfig
) -> PatchInput:
    """``patch`` with its temporal baseline (:func:`reference_input` on its other acquisitions)
    when ``attribute.baseline`` is ``temporal``; a mapped farm's patch has none."""
    if cfg.baseline != "temporal":
        return patch
    if patch.mapped:
        why = "a mapped farm's patch has no other acquisitions"
        return replace(patch, reference=TemporalReference(None, reason=why))
    alternates = read_alternates(paths, patch.patch_id, patch.grid)
    device = patch.x.device
    ref = reference_input(patch.array, alternates, meta, device, cfg.temporal_max_cue_share)
    return replace(patch, reference=ref)


@dataclass(frozen=True)
class AttributeJob:
    """What stays fixed while the attribute stage explains patches.

    Attributes:
        cfg: The ``attribute`` section.
        run_seed: ``run.seed``; each attribution's seed derives from it (:func:`derive_seed`).
        model: The U-Net in eval mode, on the patches' device.
        threshold: Probability threshold of the ``predicted_mask`` target.
        model_sha256: Digest of ``train/model.pt`` for the raster tags.
        paths: Where rasters and quicklooks go (and predict's masks are read).
        layers: Object layers by kind.
    """

    cfg: AttributeConfig
    run_seed: int
    model: nn.Module
    threshold: float
    model_sha256: str
    paths: RunPaths
    layers: Mapping[str, ObjectLayer]


class Quota:
    """At most ``limit(key)`` takes per key over a run (``None``: unlimited)."""

    def __init__(self, limit: Callable[[Any], int | None]) -> None:
        self.limit = limit
        self.used: Counter[Hashable] = Counter()

    def left(self, key: Hashable) -> bool:
        """Whether ``key`` has uses left."""
        limit = self.limit(key)
        return limit is None or self.used[key] < limit

    def take(self, key: Hashable) -> bool:
        """Count one use of ``key``; ``False`` (nothing counted) when its limit is reached."""
        limit = self.limit(key)
        if limit is not None and self.used[key] >= limit:
            return False
        self.used[key] += 1
        return True


@dataclass(frozen=True)
class Quotas:
    """The run-wide caps: targets per method, quicklooks per (method, target)."""

    targets: Quota
    quicklooks: Quota

    @classmethod
    def of(cls, cfg: AttributeConfig) -> Quotas:
        quicklooks = cfg.max_quicklooks if cfg.quicklooks else 0
        return cls(Quota(cfg.max_targets.get), Quota(lambda _key: quicklooks))


#: ``(method, target name, target id)``: one attribution of a patch.
TargetKey = tuple[str, str, str]


@dataclass(frozen=True)
class Allowance:
    """What the run-wide caps leave one patch.

    Attributes:
        explain: Attributions the patch may compute (``None``: all).
        quicklooks: Attributions that get a quicklook (``None``: all).
    """

    explain: frozenset[TargetKey] | None = None
    quicklooks: frozenset[TargetKey] | None = None

    def explains(self, key: TargetKey) -> bool:
        return self.explain is None or key in self.explain

    def looks(self, key: TargetKey) -> bool:
        return self.quicklooks is None or key in self.quicklooks


def caps_bind(cfg: AttributeConfig) -> bool:
    """Whether a run-wide cap can leave some attribution or quicklook out."""
    capped = any(cfg.max_targets.get(m) is not None for m in cfg.methods)
    return capped or cfg.quicklooks


def allot(
    keys_per_patch: Sequence[Sequence[tuple[str, str]]], cfg: AttributeConfig
) -> list[Allowance]:
    """Each patch's :class:`Allowance`: the caps taken patch by patch, target by target, method
    by method, in order (each patch's ``(target name, target id)`` keys from
    :func:`target_keys`). A quicklook is counted for every allowed attribution."""
    quotas = Quotas.of(cfg)
    out = []
    for keys in keys_per_patch:
        explain: set[TargetKey] = set()
        looks: set[TargetKey] = set()
        for name, tid in keys:
            for method in cfg.methods:
                if not quotas.targets.take(method):
                    continue
                explain.add((method, name, tid))
                if quotas.quicklooks.take((method, name)):
                    looks.add((method, name, tid))
        out.append(Allowance(frozenset(explain), frozenset(looks)))
    return out


@dataclass(frozen=True)
class PatchTarget:
    """A target and, for object targets, its polygon in the patch CRS."""

    target: Target
    geometry: BaseGeometry | None = None


def derive_seed(seed: int, *parts: str) -> int:
    """A 31-bit seed from the run seed and names (stable across runs and platforms)."""
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def object_layer_paths(cfg: AttributeConfig, paths: RunPaths) -> dict[str, Path | None]:
    """The object layers the configured targets need, by kind (analyst polygons included)."""
    sources: dict[str, Path | None] = {
        "predicted_farms": paths.predicted_farms,
        "label_farms": paths.farms,
        "false_positives": paths.false_positives,
        "missed_farms": paths.missed_farms,
        "mapped_farms": paths.map_farms,
    }
    wanted: dict[str, Path | None] = {k: v for k, v in sources.items() if k in cfg.targets}
    if cfg.analyst_polygons is not None:
        wanted["polygon"] = cfg.analyst_polygons
    return wanted


def object_layers(
    cfg: AttributeConfig, paths: RunPaths
) -> tuple[dict[str, ObjectLayer], PatchRecords]:
    """Every configured object layer that could be read, and a skip for each other one."""
    layers, reasons = read_layers(object_layer_paths(cfg, paths))
    skips = [Skip("*", "*", k, "*", f"object layer unavailable: {r}") for k, r in reasons.items()]
    return layers, skip_records(skips)


def unreadable_patch(patch_id: str, err: PipelineError) -> PatchRecords:
    """The failure record of a patch that could not be loaded."""
    return skip_records([Skip(patch_id, "*", "*", "*", f"patch unreadable: {err}", "failed")])


def mask_targets(patch: PatchInput, job: AttributeJob) -> tuple[list[PatchTarget], list[Skip]]:
    """The ``predicted_mask`` and ``patch`` targets that are configured (or their skips); none
    on a mapped farm's patch."""
    out: list[PatchTarget] = []
    skips: list[Skip] = []
    for name in () if patch.mapped else job.cfg.targets:
        try:
            if name == "predicted_mask" and patch.predicted is not None:
                out.append(PatchTarget(Target(name, "", torch.from_numpy(patch.predicted))))
            elif name == "predicted_mask":
                out.append(PatchTarget(predicted_mask_target(job.model, patch.x, job.threshold)))
            elif name == "patch":
                out.append(PatchTarget(patch_target(*patch.grid.shape)))
        except AttributionError as err:
            skips += [Skip(patch.patch_id, m, name, "", str(err)) for m in job.cfg.methods]
    return out, skips


def object_targets(patch: PatchInput, job: AttributeJob) -> tuple[list[PatchTarget], list[Skip]]:
    """One target per object of each layer on the patch (capped), or its skip; a mapped farm's
    patch takes its objects from the :data:`OWN_PATCH` layers only."""
    cap = job.cfg.max_objects_per_patch
    out: list[PatchTarget] = []
    skips: list[Skip] = []
    for kind, layer in job.layers.items():
        if patch.mapped != (kind in OWN_PATCH):
            continue
        rows = layer.for_patch(patch.patch_id, patch.grid)
        if len(rows) > cap:
            reason = f"max_objects_per_patch: {len(rows)} objects, first {cap} explained"
            skips.append(Skip(patch.patch_id, "*", kind, "*", reason))
            rows = rows.head(cap)
        for target_id, geom in zip(rows["target_id"], rows.geometry, strict=True):
            try:
                out.append(PatchTarget(polygon_target(kind, target_id, geom, patch.grid), geom))
            except AttributionError as err:
                tid = str(target_id)
                skips += [Skip(patch.patch_id, m, kind, tid, str(err)) for m in job.cfg.methods]
    return out, skips


def agreement(paths: RunPaths, patch_id: str, target: Target) -> list[float]:
    """IoU of a recomputed ``predicted_mask`` target with predict's mask (``[]`` if none)."""
    path = paths.predicted_mask(patch_id)
    if target.name != "predicted_mask" or not path.is_file():
        return []
    try:
        mask = read_raster(path)[0][0] > 0
    except PipelineError as err:
        log.warning("cannot read %s for the agreement check: %s", path, err)
        return []
    ours = target.mask.numpy()
    if mask.shape != ours.shape:
        return []
    union = (mask | ours).sum()
    return [float((mask & ours).sum() / union) if union else 1.0]


def write_patch_quicklook(result: AttributionResult, patch: PatchInput, path: Path) -> Path:
    """The PNG quicklook of one attribution over the patch's true colour."""
    target = result.target
    return write_quicklook(
        path,
        patch.array[[band_index(b) for b in ("B04", "B03", "B02")]],
        result.aggregate.numpy(),
        signed=METHODS[result.method].signed,
        mask=target.mask.numpy(),
        title=f"{patch.patch_id} {result.method} {target.name} {target.target_id}".strip(),
    )


def object_row(
    result: AttributionResult,
    patch: PatchInput,
    geometry: BaseGeometry,
    flag: bool | None,
    buffer_m: float,
) -> dict[str, Any]:
    """The farm-table row of an object target: attribution mass inside, in the ring, outside."""
    mass = region_mass(
        result.values.numpy(),
        result.aggregate.numpy(),
        result.target.mask.numpy(),
        ring_mask(geometry, patch.grid, buffer_m),
        BANDS,
    )
    lonlat = gpd.GeoSeries([geometry], crs=patch.grid.crs).to_crs(4326).iloc[0]
    return farm_row(result, patch_id=patch.patch_id, mass=mass, flag=flag, geometry_4326=lonlat)


def export_result(
    result: AttributionResult,
    patch: PatchInput,
    item: PatchTarget,
    seconds: float,
    job: AttributeJob,
    allowance: Allowance,
) -> PatchRecords:
    """Write the COG (and quicklook) of one result; return its index row (and farm row)."""
    target = result.target
    cog = job.paths.attribution(patch.patch_id, result.method, target.name, target.target_id)
    tags = attribution_tags(
        result,
        patch_id=patch.patch_id,
        model_sha256=job.model_sha256,
        stac_item_ids=json.loads(patch.tags.get("stac_item_ids", "[]") or "[]"),
        gap_tolerance=job.cfg.gap_tolerance,
    )
    write_attribution(cog, result, patch.grid, tags=tags, valid=patch.valid)
    flag = gap_flag(result, job.cfg.gap_tolerance)
    rel = job.paths.relative(cog)
    row = result_row(result, patch_id=patch.patch_id, path=rel, seconds=seconds, flag=flag)
    outputs = [cog]
    if allowance.looks((result.method, target.name, target.target_id)):
        png = job.paths.quicklook(result.method, target.name, cog.stem)
        outputs.append(write_patch_quicklook(result, patch, png))
    farms = []
    if item.geometry is not None:
        farms.append(object_row(result, patch, item.geometry, flag, job.cfg.buffer_m))
    return PatchRecords([row], farms, outputs, quicklooks=len(outputs) - 1)


def explain_target(
    patch: PatchInput,
    item: PatchTarget,
    method: str,
    superpixels: np.ndarray | None,
    job: AttributeJob,
    allowance: Allowance,
) -> PatchRecords:
    """Explain one target with one method (unless its budget is spent) and export it."""
    target, pid = item.target, patch.patch_id
    if not allowance.explains((method, target.name, target.target_id)):
        limit = next((v for k, v in job.cfg.max_targets.items() if k == method), None)
        reason = f"budget: attribute.max_targets.{method}={limit} reached"
        return skip_records([Skip(pid, method, target.name, target.target_id, reason)])
    seed = derive_seed(job.run_seed, pid, method, target.name, target.target_id)
    start = time.perf_counter()
    try:
        result = explain(
            method,
            job.model,
            patch.x,
            target,
            job.cfg,
            seed=seed,
            superpixels=superpixels,
            reference=patch.reference,
        )
    except AttributionError as err:
        return skip_records([Skip(pid, method, target.name, target.target_id, str(err))])
    return export_result(result, patch, item, time.perf_counter() - start, job, allowance)


def patch_targets(patch: PatchInput, job: AttributeJob) -> tuple[list[PatchTarget], list[Skip]]:
    """Every target of the patch (mask targets first, then objects by layer) and the skips."""
    masks, mask_skips = mask_targets(patch, job)
    objects, object_skips = object_targets(patch, job)
    return masks + objects, mask_skips + object_skips


def target_keys(
    patch: PatchInput, job: AttributeJob
) -> tuple[list[tuple[str, str]], np.ndarray | None]:
    """``(target name, target id)`` of every explainable target of ``patch``, in order, and the
    predicted mask when it was computed (for :attr:`PatchInput.predicted`)."""
    targets, _ = patch_targets(patch, job)
    keys = [(t.target.name, t.target.target_id) for t in targets]
    masks = [t.target.mask.numpy() for t in targets if t.target.name == "predicted_mask"]
    return keys, (masks[0] if masks else None)


def explain_patch(
    patch: PatchInput, job: AttributeJob, allowance: Allowance | None = None
) -> PatchRecords:
    """Explain every target of ``patch`` with every configured method.

    The superpixel methods share one SLIC segmentation of the patch (none is computed once
    their ``max_targets`` are spent).

    Args:
        patch: The patch.
        job: What stays fixed.
        allowance: What the run-wide caps leave this patch (default: everything).

    Returns:
        The patch's records, in order: its target skips, then per target the agreement with
        predict's mask and one row per method.
    """
    allowance = allowance or Allowance()
    targets, skips = patch_targets(patch, job)
    parts = [skip_records(skips)]
    superpixels = None
    sp_methods = superpixel_methods(job.cfg.methods)
    needs = [(m, t.target.name, t.target.target_id) for m in sp_methods for t in targets]
    if any(allowance.explains(key) for key in needs):
        superpixels = slic_superpixels(patch.x, job.cfg.n_superpixels, job.cfg.slic_compactness)
    for item in targets:
        parts.append(PatchRecords(agreement=agreement(job.paths, patch.patch_id, item.target)))
        for method in job.cfg.methods:
            parts.append(explain_target(patch, item, method, superpixels, job, allowance))
    return combine(parts)
