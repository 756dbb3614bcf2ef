"""What a retraining takes from an earlier run's label triage: ignore regions, hard negatives.

Reads the review file (``triage/review.gpkg``, layers ``candidates`` and ``suspects``;
:mod:`pipeline.triage.review`) and selects, by the evidence the triage recorded and never by a
truth:

- ignore regions (:func:`ignore_regions`): suspect labels and candidates strong enough to be
  farms OSM misses, widened by a buffer; the train stage leaves their pixels out of the loss;
- hard negatives (:func:`hard_negative_objects`): candidates that are no farm by the evidence
  (a confirmed spurious cue, attribution mostly outside, or a weak score); the labels stage
  plans a negative patch on each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline.config.feedback import HardNegativesConfig, IgnoreLabelsConfig
from pipeline.errors import LabelsError, MissingArtifactError
from pipeline.io import sha256_file
from pipeline.triage.overlap import metric_crs

#: Columns each layer must have for the selections here.
NEEDED: dict[str, frozenset[str]] = {
    "candidates": frozenset({"object_id", "score", "focus", "cue"}),
    "suspects": frozenset({"farm_id", "reason"}),
}


@dataclass(frozen=True)
class Review:
    """The two layers of a review file (EPSG:4326) and the file's SHA-256."""

    candidates: gpd.GeoDataFrame
    suspects: gpd.GeoDataFrame
    sha256: str


def _run_of(path: Path) -> str:
    """The run a ``<data_root>/runs/<run>/triage/review.gpkg`` belongs to ("RUN" if unknown)."""
    parts = path.parts
    return parts[-3] if len(parts) >= 3 and parts[-2] == "triage" else "<earlier run>"


def read_review(path: Path, key: str) -> Review:
    """Read ``path``, the review file named by config key ``key``.

    Raises:
        MissingArtifactError: the file does not exist (names the make target that writes it).
        LabelsError: a layer or a column is missing (the file is not a triage review).
    """
    if not path.is_file():
        raise MissingArtifactError(
            f"the label triage review ({key})", path, f"triage RUN={_run_of(path)}"
        )
    layers = {name for name, _ in pyogrio.list_layers(path)}
    frames: dict[str, gpd.GeoDataFrame] = {}
    for name, columns in NEEDED.items():
        if name not in layers:
            raise LabelsError(
                f"{key} = {path} has no layer {name!r} (layers: {sorted(layers)}); point it at "
                "a triage/review.gpkg written by the triage stage (make triage)"
            )
        frame = gpd.read_file(path, layer=name)
        missing = sorted(columns - set(frame.columns))
        if missing:
            raise LabelsError(
                f"{key} = {path}: layer {name!r} lacks column(s) {missing}; it was written by "
                "an older triage stage. Re-run that run's triage (make triage, --force)"
            )
        frames[name] = frame.to_crs(4326) if frame.crs is not None else frame.set_crs(4326)
    return Review(frames["candidates"], frames["suspects"], sha256_file(path))


def _number(value: object) -> float:
    """A column value as a float (NaN for empty text or None)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _buffered(frame: gpd.GeoDataFrame, metres: float) -> gpd.GeoSeries:
    """``frame``'s geometries widened by ``metres`` (in a metric CRS), back in EPSG:4326."""
    if frame.empty or metres <= 0:
        return frame.geometry
    crs = metric_crs(frame, frame)
    return frame.geometry.to_crs(crs).buffer(metres).to_crs(4326)


def ignore_regions(review: Review, cfg: IgnoreLabelsConfig) -> gpd.GeoDataFrame:
    """Regions whose pixels a retraining leaves out of the loss: suspects of the configured
    reasons, and candidates of a high score with no confirmed cue and their attribution inside.

    Returns:
        EPSG:4326 frame with ``farm_id`` (region id: the label's ``farm_id`` or
        ``candidate:<object_id>``), ``kind`` (``suspect``/``candidate``), ``why`` (reason or
        score) and the outline widened by ``cfg.buffer_m``.
    """
    sus = review.suspects[review.suspects["reason"].isin(cfg.suspect_reasons)]
    scores = review.candidates["score"].map(_number)
    focus = review.candidates["focus"].map(_number)
    no_cue = review.candidates["cue"].fillna("").astype(str) == ""
    inside = focus.isna() | (focus >= cfg.min_candidate_focus)
    cands = review.candidates[(scores >= cfg.min_candidate_score) & no_cue & inside]
    parts = [
        gpd.GeoDataFrame(
            {
                "farm_id": sus["farm_id"].astype(str),
                "kind": "suspect",
                "why": sus["reason"].astype(str),
            },
            geometry=_buffered(sus, cfg.buffer_m),
            crs=4326,
        ),
        gpd.GeoDataFrame(
            {
                "farm_id": "candidate:" + cands["object_id"].astype(str),
                "kind": "candidate",
                "why": [f"score {_number(s):.3f}" for s in cands["score"]],
            },
            geometry=_buffered(cands, cfg.buffer_m),
            crs=4326,
        ),
    ]
    frame = pd.concat(parts, ignore_index=True)
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=4326)


def hard_negative_reason(score: float, focus: float, cue: str, cfg: HardNegativesConfig) -> str:
    """Why a candidate is no farm by the evidence ("" when it may be one)."""
    if cfg.confirmed_cue and cue:
        return f"confirmed cue {cue}"
    if math.isfinite(focus) and focus < cfg.max_focus:
        return f"focus {focus:.2f}"
    if math.isfinite(score) and score < cfg.max_score:
        return f"score {score:.3f}"
    return ""


def hard_negative_objects(review: Review, cfg: HardNegativesConfig) -> gpd.GeoDataFrame:
    """Candidates that are no farm by the evidence, weakest score first.

    Returns:
        EPSG:4326 frame with ``object_id``, ``score``, ``why`` and the object's outline.
    """
    cands = review.candidates
    reasons = [
        hard_negative_reason(_number(s), _number(f), c, cfg)
        for s, f, c in zip(
            cands["score"], cands["focus"], cands["cue"].fillna("").astype(str), strict=True
        )
    ]
    frame = cands.assign(why=reasons, score=cands["score"].map(_number))
    frame = frame[frame["why"] != ""].sort_values(["score", "object_id"], kind="stable")
    return gpd.GeoDataFrame(
        frame[["object_id", "score", "why"]].reset_index(drop=True),
        geometry=list(frame.geometry),
        crs=4326,
    )


def object_points(objects: gpd.GeoDataFrame) -> list[tuple[float, float]]:
    """``(lon, lat)`` of a point inside each object (EPSG:4326), in order."""
    points = objects.to_crs(4326).geometry.representative_point()
    return [(p.x, p.y) for p in points if p is not None and not p.is_empty]
