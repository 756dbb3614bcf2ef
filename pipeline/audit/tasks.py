"""The audit's per-farm counterfactuals as Dask tasks (the per-patch scan is
:func:`pipeline.audit.scan.scan_patches`).

The client picks the flag rows that want a counterfactual (:func:`counterfactual_rows`), cuts
each one's cases from the scanned patches, and submits one task per row; each worker loads the
model once. Results come back keyed by ``(target, target_id, cue)``, so the flag table is the
same whatever order the tasks ran in.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.audit.counterfactual import farm_cases, run_counterfactual
from pipeline.audit.flags import best_rows, wants_counterfactual
from pipeline.audit.model_access import ModelAccess, load_model_access
from pipeline.audit.patches import PatchData
from pipeline.audit.temporal import with_temporal
from pipeline.compute import run_tasks
from pipeline.config.audit import AuditConfig
from pipeline.paths import RunPaths

#: ``(target kind, target id, cue)``: one flag row.
RowKey = tuple[str, str, str]


def row_key(row: Mapping[str, Any]) -> RowKey:
    return str(row["target"]), str(row["target_id"]), str(row["cue"])


@functools.cache
def worker_access(paths: RunPaths, model_sha256: str, threads: int) -> ModelAccess:
    """The worker's model, loaded once per process and model digest."""
    torch.set_num_threads(threads)
    return load_model_access(paths)


def counterfactual_task(
    row: Mapping[str, Any],
    cases: Sequence[tuple[PatchData, np.ndarray]],
    audit: AuditConfig,
    model: tuple[RunPaths, str, int],
) -> dict[str, Any]:
    """The counterfactual columns of one flag row, inpainting and temporal (a Dask task)."""
    access = worker_access(*model)
    return with_temporal(row, cases, access, audit, run_counterfactual(row, cases, access, audit))


def counterfactual_rows(per_method: Sequence[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    """The flag rows :func:`~pipeline.audit.flags.flag_table` will ask a counterfactual for."""
    return [r for r in best_rows(per_method) if wants_counterfactual(r, scope)]


def run_counterfactuals(
    client: Any,
    rows: Sequence[dict[str, Any]],
    scan: Any,
    audit: AuditConfig,
    model: tuple[RunPaths, str, int],
    retries: int,
) -> dict[RowKey, dict[str, Any]]:
    """Every row's counterfactual on ``client``, keyed by :func:`row_key`.

    Args:
        client: A ``distributed.Client``.
        rows: Flag rows (:func:`counterfactual_rows`).
        scan: The :class:`~pipeline.audit.scan.Scan` holding the rows' patches and masks.
        audit: The ``audit`` section.
        model: ``(paths, model sha256, torch threads)`` the workers load the model from.
        retries: Retries of a failing task.
    """
    calls = [(r, farm_cases(r, scan.patches, scan.farm_masks), audit, model) for r in rows]
    results = run_tasks(
        client,
        counterfactual_task,
        calls,
        what="audit: counterfactuals",
        unit="flags",
        retries=retries,
    )
    return {row_key(r): cf for r, cf in zip(rows, results, strict=True)}
