"""The attribute stage's work as Dask tasks: one task per patch, all its targets and methods.

Two passes over the patches, both on the cluster: :func:`survey_task` lists each patch's
targets (only when a run-wide cap can bind, :func:`~pipeline.attribution.patches.caps_bind`),
the client turns the lists into one :class:`~pipeline.attribution.patches.Allowance` per patch
(:func:`~pipeline.attribution.patches.allot`), then :func:`explain_task` explains each patch
within its allowance (reusing the predicted mask its survey computed). Every seed derives from
the patch and target names and every file is written atomically under its own name, so a task
is idempotent and the outputs do not depend on how many workers ran them or in what order. The
model is loaded once per worker process.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.attribution.layers import ObjectLayer
from pipeline.attribution.ledger import PatchRecords, Skip, skip_records
from pipeline.attribution.patches import (
    Allowance,
    AttributeJob,
    PatchInput,
    allot,
    caps_bind,
    explain_patch,
    load_patch,
    target_keys,
    unreadable_patch,
    with_reference,
)
from pipeline.compute import run_tasks
from pipeline.config.attribute import AttributeConfig
from pipeline.errors import PipelineError
from pipeline.mapping.chunks import ModelRef
from pipeline.model.io import ModelMeta
from pipeline.model.window import resolve_device
from pipeline.paths import RunPaths


@dataclass(frozen=True)
class PatchTask:
    """One patch to explain.

    Attributes:
        patch_id: Plan id (``p00012``) or mapped farm id (``m0003``).
        image: Its 10-band COG.
        mapped: A mapped farm's patch (``map/patches/``).
    """

    patch_id: str
    image: Path
    mapped: bool = False


@dataclass(frozen=True)
class AttributeSpec:
    """What every patch task needs (scattered to the workers once).

    Attributes:
        cfg: The ``attribute`` section.
        run_seed: ``run.seed``.
        model: The model every worker loads once.
        device: ``attribute.device``.
        threads: torch threads per worker (``compute.threads_per_worker``).
        paths: The run's paths.
        layers: Object layers by kind.
    """

    cfg: AttributeConfig
    run_seed: int
    model: ModelRef
    device: str
    threads: int
    paths: RunPaths
    layers: Mapping[str, ObjectLayer]


@functools.cache
def worker_model(ref: ModelRef, device: str, threads: int) -> tuple[nn.Module, ModelMeta]:
    """The worker's model, loaded once per process, model and device."""
    torch.set_num_threads(threads)
    module, meta = ref.loader(Path(ref.path), device=resolve_device(device))
    return module.eval(), meta


def _job(spec: AttributeSpec) -> tuple[AttributeJob, ModelMeta]:
    module, meta = worker_model(spec.model, spec.device, spec.threads)
    job = AttributeJob(
        spec.cfg, spec.run_seed, module, meta.threshold, spec.model.sha256, spec.paths, spec.layers
    )
    return job, meta


def _load(job: AttributeJob, meta: ModelMeta, task: PatchTask) -> PatchInput:
    device = next(job.model.parameters()).device
    patch = load_patch(task.image, task.patch_id, meta, device, mapped=task.mapped)
    return with_reference(patch, job.paths, meta, job.cfg)


@dataclass(frozen=True)
class Survey:
    """One patch's targets before it is explained.

    Attributes:
        keys: ``(target name, target id)`` of its explainable targets, in order.
        predicted: Its predicted mask (``(H, W)`` bool) when a target needed it, else ``None``.
    """

    keys: list[tuple[str, str]]
    predicted: np.ndarray | None = None


def survey_task(spec: AttributeSpec, task: PatchTask) -> Survey | None:
    """The patch's targets; ``None`` when it cannot be read (a Dask task).

    Raises:
        ModelError: the model cannot be loaded (not a patch's fault: the stage fails).
    """
    job, meta = _job(spec)
    try:
        patch = _load(job, meta, task)
    except PipelineError:
        return None
    return Survey(*target_keys(patch, job))


def explain_task(
    spec: AttributeSpec, task: PatchTask, allowance: Allowance, survey: Survey | None = None
) -> tuple[PatchRecords, bool]:
    """Explain one patch within its allowance (a Dask task), reusing its survey's predicted
    mask when there is one.

    Returns:
        ``(its records, whether it could be read)``; an unreadable patch is recorded as failed.

    Raises:
        ModelError: the model cannot be loaded (not a patch's fault: the stage fails).
    """
    job, meta = _job(spec)
    try:
        patch = _load(job, meta, task)
    except PipelineError as err:
        return unreadable_patch(task.patch_id, err), False
    if survey is not None and survey.predicted is not None:
        patch = replace(patch, predicted=survey.predicted)
    return explain_patch(patch, job, allowance), True


def patch_tasks(
    tiles: pd.DataFrame, mapped: pd.DataFrame | None, paths: RunPaths
) -> list[PatchTask]:
    """The patches in order: the tiles index rows, then the mapped farms' patches by id.

    Args:
        tiles: Rows of ``tiles/index.gpkg`` (``patch_id``, optional ``image``).
        mapped: Rows of ``map/patches.gpkg`` (``patch_id``, ``image``), or ``None``.
        paths: The run's paths.
    """

    def image(row: Mapping[str, Any], default: Path) -> Path:
        rel = row.get("image")
        return paths.resolve(rel) if isinstance(rel, str) and rel else default

    out = [
        PatchTask(str(r["patch_id"]), image(r, paths.image(str(r["patch_id"]))))
        for r in tiles.to_dict(orient="records")
    ]
    if mapped is not None:
        rows = sorted(mapped.to_dict(orient="records"), key=lambda r: str(r["patch_id"]))
        out += [
            PatchTask(str(r["patch_id"]), image(r, paths.map_patch(str(r["patch_id"]))), True)
            for r in rows
        ]
    return out


def missing_patches(
    layers: Mapping[str, ObjectLayer], tasks: Sequence[PatchTask], paths: RunPaths
) -> PatchRecords:
    """A skip for every mapped farm the map stage cut no patch for (never a silent gap)."""
    layer = layers.get("mapped_farms")
    if layer is None:
        return PatchRecords()
    have = {t.patch_id for t in tasks if t.mapped}
    reason = (
        f"no farm patch in {paths.relative(paths.map_patches_index)}: set map.farm_patches: "
        "true and re-run `make map`"
    )
    return skip_records(
        Skip(fid, "*", "mapped_farms", fid, reason)
        for fid in sorted(set(layer.frame["target_id"]) - have)
    )


def run_patches(
    client: Any, spec: AttributeSpec, tasks: Sequence[PatchTask], retries: int
) -> tuple[list[PatchRecords], int]:
    """Explain every patch of ``tasks`` on ``client``.

    Returns:
        ``(records per patch in task order, number of patches explained)``.
    """
    shared = client.scatter(spec, broadcast=True, hash=False)
    allowances = [Allowance()] * len(tasks)
    surveys: list[Survey | None] = [None] * len(tasks)
    if caps_bind(spec.cfg):
        surveys = run_tasks(
            client,
            survey_task,
            [(shared, t) for t in tasks],
            what="attribute: listing targets",
            unit="patches",
            retries=retries,
        )
        allowances = allot([s.keys if s else [] for s in surveys], spec.cfg)
    results = run_tasks(
        client,
        explain_task,
        [(shared, *c) for c in zip(tasks, allowances, surveys, strict=True)],
        what="attribute",
        unit="patches",
        retries=retries,
    )
    return [r for r, _ in results], sum(ok for _, ok in results)
