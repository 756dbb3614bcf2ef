"""audit stage: does the model lean on snow, cloud or water? Attribution points, a counterfactual
proves.

Reads the attribution index and rasters, the patches (and SCL), label and predicted masks, the
farm polygons and the model. Writes (all under ``audit/``): ``cues.csv`` (per patch and cue:
pixel share or "not computable" and why), ``reliance.csv`` (per patch x method x target x
cue), ``run_flags.csv`` (per method x target kind x cue, pooled over patches with bootstrap CIs),
``flags.csv`` / ``flags.gpkg`` (one row per farm target and cue, with the counterfactual and
the verdict), ``sanity.json`` (model and data randomization), ``faithfulness.csv`` and
``faithfulness_curves.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, reproject
from torch import nn

from pipeline.attribution.targets import Target, patch_target, predicted_mask_target
from pipeline.audit import counterfactual as cfx
from pipeline.audit import faithfulness as fth
from pipeline.audit import flags as flg
from pipeline.audit import reliance as rel
from pipeline.audit import sanity as san
from pipeline.audit.cues import CueMask, compute_cues, valid_pixels
from pipeline.audit.explainers import ExplainFn, make_explainer
from pipeline.audit.geometry import crop_window, geometries_mask, to_grid_crs
from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import AuditError, MissingArtifactError, RasterError
from pipeline.geo.raster import Grid, read_raster
from pipeline.io import atomic_path, write_json
from pipeline.paths import RunPaths
from pipeline.stages.base import StageOutput

log = logging.getLogger(__name__)

#: Object targets (one farm each) and where their polygons live: (path getter, id column).
FARM_TARGETS: dict[str, tuple[Callable[[RunPaths], Path], str]] = {
    "label_farms": (lambda p: p.farms, "farm_id"),
    "predicted_farms": (lambda p: p.predicted_farms, "pred_id"),
    "false_positives": (lambda p: p.stage_dir("predict") / "false_positives.gpkg", "id"),
    "missed_farms": (lambda p: p.stage_dir("predict") / "missed.gpkg", "id"),
}


# ---------------------------------------------------------------------------------------- I/O
def read_image(path: Path) -> tuple[np.ndarray, Grid, tuple[str, ...]]:
    """A patch with its band names (any subset of BANDS; missing bands are the cue's problem)."""
    try:
        with rasterio.open(path) as src:
            names = tuple(d or "" for d in src.descriptions)
            return src.read(), Grid(src.crs, src.transform, src.height, src.width), names
    except RasterioError as err:
        raise RasterError(f"cannot read patch {path}: {err}; re-run `make fetch`") from err


def read_band(path: Path, grid: Grid) -> np.ndarray | None:
    """First band of an optional raster on ``grid``; ``None`` if absent, all nodata or off-grid."""
    if not path.is_file():
        return None
    array, g, _ = read_raster(path)
    if g.shape != grid.shape or g.transform != grid.transform:
        log.warning("%s is not on its patch grid; ignored", path)
        return None
    return array[0]


def read_attribution_index(paths: RunPaths, run: str) -> pd.DataFrame:
    """Rows of ``attribute/index.csv`` with status ``ok``.

    Raises:
        MissingArtifactError: the index is missing.
        AuditError: it lists no successful attribution.
    """
    path = paths.attribution_index
    if not path.is_file():
        raise MissingArtifactError("the attribution index", path, f"attribute RUN={run}")
    index = pd.read_csv(
        path, dtype={"patch_id": str, "target_id": str, "method": str, "target": str, "status": str}
    )
    index["target_id"] = index["target_id"].fillna("")
    ok = index[index.get("status", pd.Series("ok", index=index.index)).fillna("ok") == "ok"]
    if ok.empty:
        raise AuditError(
            f"the run has no attributions to audit: {path} lists {len(index)} rows and none has "
            "status 'ok'. Run `make attribute` with at least one method and target (see "
            "attribute.methods / attribute.targets) and check its skip reasons in the manifest."
        )
    return ok.reset_index(drop=True)


def read_farm_polygons(paths: RunPaths, kinds: set[str]) -> dict[tuple[str, str], Any]:
    """``(target kind, id) -> shapely geometry (EPSG:4326)`` for the object targets present."""
    out: dict[tuple[str, str], Any] = {}
    for kind in sorted(kinds & FARM_TARGETS.keys()):
        getter, col = FARM_TARGETS[kind]
        path = getter(paths)
        if not path.is_file():
            log.warning("polygons of %s targets not found at %s", kind, path)
            continue
        gdf = gpd.read_file(path).to_crs(4326)
        if col not in gdf.columns:
            log.warning("%s has no %s column; %s targets get no polygon", path, col, kind)
            continue
        for ident, geom in zip(gdf[col].astype(str), gdf.geometry, strict=True):
            out[(kind, ident)] = geom
    return out


def analyst_cues(cfg: RunConfig) -> dict[str, Any]:
    """Analyst cue sources: name -> GeoDataFrame (vector) or Path (raster).

    Raises:
        AuditError: a configured cue file does not exist or cannot be read.
    """
    out: dict[str, Any] = {}
    for name, path in cfg.audit.cue_files.items():
        if not path.is_file():
            raise AuditError(
                f"audit.cue_files[{name!r}] = {path} does not exist; fix the path "
                "or remove the entry"
            )
        if path.suffix.lower() in (".tif", ".tiff"):
            out[name] = path
        else:
            try:
                out[name] = gpd.read_file(path)
            except Exception as err:  # pyogrio raises several types
                raise AuditError(f"cannot read analyst cue {name!r} from {path}: {err}") from err
    return out


def analyst_on_grid(source: Any, grid: Grid) -> np.ndarray | str:
    """An analyst cue on ``grid`` (bool), or the reason it cannot be put there."""
    if isinstance(source, Path):
        dst = np.zeros(grid.shape, dtype=np.float32)
        try:
            with rasterio.open(source) as src:
                reproject(
                    rasterio.band(src, 1),
                    dst,
                    dst_transform=grid.transform,
                    dst_crs=grid.crs,
                    resampling=Resampling.nearest,
                    dst_nodata=0,
                )
        except RasterioError as err:
            return f"cannot reproject {source} onto the patch grid: {err}"
        return np.nan_to_num(dst) != 0
    if source.crs is None:
        return "the analyst cue file has no CRS; set one (e.g. EPSG:4326)"
    geoms = source.to_crs(grid.crs).geometry
    return geometries_mask(list(geoms), grid)


# ----------------------------------------------------------------------------------- patches
@dataclass
class PatchData:
    """Everything the audit needs from one patch."""

    patch_id: str
    image: np.ndarray
    bands: tuple[str, ...]
    grid: Grid
    valid: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    cues: dict[str, CueMask]


def load_patch(paths: RunPaths, cfg: RunConfig, pid: str, analyst: dict[str, Any]) -> PatchData:
    """Read one patch, its SCL and masks, and compute its cues."""
    path = paths.image(pid)
    if not path.is_file():
        raise MissingArtifactError(f"patch {pid}", path, f"fetch RUN={cfg.run.name}")
    image, grid, bands = read_image(path)
    scl = read_band(paths.scl(pid), grid)
    if scl is not None and not scl.any():
        scl = None  # all nodata: fall back to spectral tests
    labels = read_band(paths.mask(pid), grid)
    predicted = read_band(paths.predicted_mask(pid), grid)
    zeros = np.zeros(grid.shape, dtype=bool)
    on_grid = {name: analyst_on_grid(src, grid) for name, src in analyst.items()}
    cues = compute_cues(image, bands, scl, cfg.audit, on_grid)
    return PatchData(
        pid,
        image,
        bands,
        grid,
        valid_pixels(image),
        zeros if labels is None else labels.astype(bool),
        zeros if predicted is None else predicted.astype(bool),
        cues,
    )


def cue_rows(p: PatchData) -> list[dict[str, Any]]:
    """Rows of ``cues.csv`` for one patch."""
    return [
        {
            "patch_id": p.patch_id,
            "cue": c.name,
            "status": "computed" if c.computable else "not_computable",
            "source": c.source,
            "pixel_share": c.share(p.valid),
            "pixels": int((c.mask & p.valid).sum()) if c.mask is not None else -1,
            "reason": c.reason,
        }
        for c in p.cues.values()
    ]


def target_mask(
    row: pd.Series, p: PatchData, polygons: dict[tuple[str, str], Any]
) -> np.ndarray | None:
    """The target's ``(H, W)`` bool region on this patch, ``None`` if it cannot be rebuilt."""
    kind = str(row["target"])
    if kind in FARM_TARGETS:
        geom = polygons.get((kind, str(row["target_id"])))
        if geom is None:
            return None
        return geometries_mask([to_grid_crs(geom, "EPSG:4326", p.grid)], p.grid)
    if kind == "predicted_mask":
        return p.predicted
    return np.ones(p.grid.shape, dtype=bool)


# ---------------------------------------------------------------------------------- reliance
@dataclass
class TargetStats:
    """Per (target kind, target id, method, cue): units for pooling and the patches seen."""

    patch_units: list[rel.UnitSums] = field(default_factory=list)
    block_units: list[rel.UnitSums] = field(default_factory=list)
    patches: list[str] = field(default_factory=list)
    swir: list[float] = field(default_factory=list)
    computable: bool = True
    reason: str = ""


def reliance_for_row(
    row: pd.Series,
    p: PatchData,
    tmask: np.ndarray,
    cfg: RunConfig,
    paths: RunPaths,
    stats: dict[tuple[str, str, str, str], TargetStats],
) -> list[dict[str, Any]]:
    """Reliance rows of one attribution raster, accumulating per-target statistics."""
    array, _, _ = read_raster(paths.root / str(row["path"]))
    values, aggregate = array[: len(BANDS)], array[-1]
    buffer_px = rel.buffer_pixels(cfg.audit.buffer_m, p.grid.res)
    region = rel.outside_region(p.labels | p.predicted | tmask, p.valid, buffer_px)
    out = []
    for cue in p.cues.values():
        key = (str(row["target"]), str(row["target_id"]), str(row["method"]), cue.name)
        st = stats.setdefault(key, TargetStats())
        st.patches.append(p.patch_id)
        base = {
            "patch_id": p.patch_id,
            "method": row["method"],
            "target": row["target"],
            "target_id": row["target_id"],
            "cue": cue.name,
            "cue_source": cue.source,
        }
        if cue.mask is None:
            st.computable, st.reason = False, cue.reason
            out.append({**base, "status": "not_computable", "reason": cue.reason})
            continue
        units = rel.unit_sums(aggregate, cue.mask, region)
        st.patch_units.append(units)
        st.block_units.extend(rel.block_sums(aggregate, cue.mask, region, cfg.audit.block_px))
        r = rel.pooled([units])
        shares = rel.band_shares(values, BANDS, cue.mask & region)
        st.swir.append(shares["swir"])
        out.append(
            {
                **base,
                "status": "ok",
                "reason": "",
                "cue_pixels": units.n_cue,
                "region_pixels": units.n_region,
                "attr_share": r.attr_share,
                "area_share": r.area_share,
                "enrichment": r.enrichment,
                "effect": r.effect,
                **{f"band_share_{g}": v for g, v in shares.items()},
                "flagged": flg.is_flagged(
                    r.enrichment,
                    r.effect,
                    threshold=cfg.audit.enrichment_threshold,
                    min_effect=cfg.audit.min_effect,
                ),
            }
        )
    return out


def pooled_row(
    key: tuple[str, str, str, str], st: TargetStats, units: list[rel.UnitSums], cfg: RunConfig
) -> dict[str, Any]:
    """One pooled (target, method, cue) statistic with its bootstrap CI and flag."""
    kind, tid, method, cue = key
    base = {
        "target": kind,
        "target_id": tid,
        "method": method,
        "cue": cue,
        "patch_ids": json.dumps(sorted(set(st.patches))),
        "n_patches": len(set(st.patches)),
    }
    if not st.computable:
        return {
            **base,
            "computable": False,
            "cue_present": False,
            "reason": st.reason,
            "enrichment": np.nan,
            "effect": np.nan,
            "flagged": False,
        }
    r = rel.pooled(units)
    lo, hi = rel.bootstrap_enrichment(
        units, n_boot=cfg.audit.bootstrap, level=cfg.audit.ci_level, seed=cfg.run.seed
    )
    present = sum(u.n_cue for u in units) > 0
    return {
        **base,
        "computable": True,
        "cue_present": present,
        "reason": "",
        "enrichment": r.enrichment,
        "ci_low": lo,
        "ci_high": hi,
        "attr_share": r.attr_share,
        "area_share": r.area_share,
        "effect": r.effect,
        "swir_share": float(np.nanmean(st.swir)) if np.isfinite(st.swir).any() else np.nan,
        "flagged": flg.is_flagged(
            r.enrichment,
            r.effect,
            threshold=cfg.audit.enrichment_threshold,
            min_effect=cfg.audit.min_effect,
        ),
    }


def run_level(stats: dict[tuple[str, str, str, str], TargetStats], cfg: RunConfig) -> pd.DataFrame:
    """Per method x target kind x cue, pooled over every target's patches (CI over patches)."""
    groups: dict[tuple[str, str, str, str], TargetStats] = {}
    for (kind, _tid, method, cue), st in stats.items():
        g = groups.setdefault((kind, "*", method, cue), TargetStats())
        g.patch_units.extend(st.patch_units)
        g.patches.extend(st.patches)
        g.swir.extend(st.swir)
        if not st.computable:
            g.reason = st.reason
    rows = [
        pooled_row(key, g, g.patch_units, cfg) | {"computable": bool(g.patch_units)}
        for key, g in sorted(groups.items())
    ]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ model access
@dataclass(frozen=True)
class ModelAccess:
    """The model and its input normalization."""

    model: nn.Module
    normalize: Callable[[np.ndarray], torch.Tensor]
    threshold: float
    bands: tuple[str, ...]


def load_model_access(paths: RunPaths) -> ModelAccess:
    from pipeline.model.io import load_model, normalize

    model, meta = load_model(paths.model)
    for p in model.parameters():
        p.requires_grad_(False)
    return ModelAccess(model, lambda a: normalize(a, meta), meta.threshold, tuple(meta.bands))


def run_counterfactual(
    row: dict[str, Any],
    cases: Sequence[tuple[PatchData, np.ndarray]],
    ma: ModelAccess,
    cfg: RunConfig,
) -> dict[str, Any]:
    """Counterfactual columns for one (farm target, cue), pooled over the target's patches.

    Args:
        cases: Each patch holding part of the target, with the target's mask there. The
            ``cf_patch`` column lists the patches used (JSON), in this order.
    """
    usable: list[cfx.Case] = []
    placebos: list[cfx.Case] = []
    reasons: list[str] = []
    used: list[str] = []
    for p, tmask in cases:
        cue = p.cues[row["cue"]].mask
        if p.bands != ma.bands:
            reasons.append(
                f"{p.patch_id}: patch bands {list(p.bands)} differ from the model's "
                f"{list(ma.bands)}"
            )
            continue
        if cue is None:
            reasons.append(f"{p.patch_id}: {p.cues[row['cue']].reason}")
            continue
        radius = max(1, round(cfg.audit.background_radius_m / p.grid.res))
        protect = p.labels | tmask
        image = p.image.astype(np.float32)
        image_cf = cfx.remove_cue(image, cue, p.valid, protect, radius)
        target = Target(str(row["target"]), str(row["target_id"]), torch.from_numpy(tmask))
        usable.append((image, image_cf, target))
        used.append(p.patch_id)
        if cfg.audit.placebo_ratio > 0:
            moved_px = cue & p.valid & ~protect
            shun = protect | np.any([c.mask for c in p.cues.values() if c.mask is not None], 0)
            margin = rel.buffer_pixels(cfg.audit.buffer_m, p.grid.res)
            allowed = p.valid & ~rel.dilate(shun, margin)
            rows_, cols_ = np.nonzero(tmask)
            centre = (float(rows_.mean()), float(cols_.mean())) if rows_.size else (0.0, 0.0)
            fake = cfx.placebo_mask(moved_px, centre, allowed)
            placebos.append(
                (image, cfx.remove_cue(image, fake, p.valid, protect | cue, radius), target)
            )
    if not usable:
        return {"cf_status": "skipped", "cf_reason": "; ".join(reasons)}
    near_px = max(3, rel.buffer_pixels(cfg.audit.buffer_m, cases[0][0].grid.res))
    score = partial(
        cfx.pooled_counterfactual,
        ma.model,
        ma.normalize,
        threshold=ma.threshold,
        near_px=near_px,
        prob_threshold=cfg.audit.counterfactual_threshold,
        iou_threshold=cfg.audit.counterfactual_iou,
        logit_threshold=cfg.audit.counterfactual_logit,
    )
    res = score(usable)
    control = cfx.placebo_columns(
        score(placebos) if placebos else None, res, cfg.audit.placebo_ratio
    )
    return {
        "cf_status": "ok",
        "cf_reason": "; ".join(reasons),
        "cf_patch": json.dumps(used),
        "score": res.score,
        "score_cf": res.score_cf,
        "score_change": res.score_change,
        "prob": res.prob,
        "prob_cf": res.prob_cf,
        "prob_change": res.prob_change,
        "logit_change": res.logit_change,
        "mask_iou": res.mask_iou,
        "n_replaced": res.n_replaced,
        "moved": res.moved and control["specific"] is not False,
        "moved_by": json.dumps(list(res.moved_by)),
        **control,
    }


# ------------------------------------------------------------------------- sanity/faithfulness
def check_cases(
    cases_src: list[tuple[PatchData, np.ndarray | None]],
    ma: ModelAccess,
    crop: int,
    *,
    whole_patch: bool = False,
) -> list[san.Case]:
    """Cropped, normalized inputs with frozen targets for the explanation checks.

    ``whole_patch`` explains the crop's mean logit instead of the farm. The randomization
    checks need it: for a farm-mask target every gradient map is concentrated on the mask
    whatever the weights (a re-initialized network's too), so rank correlations stay high and
    measure the target's footprint, not the model. The crop's mean logit is the analogue of the
    whole-image class score Adebayo et al. (2018) randomize against.
    """
    out = []
    for p, tmask in cases_src:
        if p.bands != ma.bands:
            continue
        focus = tmask if tmask is not None and tmask.any() else p.predicted | p.labels
        win = crop_window(focus, crop)
        x = ma.normalize(p.image[:, win[0], win[1]].astype(np.float32)[None])
        sub = focus[win]
        if whole_patch:
            target = patch_target(*sub.shape)
        elif sub.any():
            target = Target("farm", "", torch.from_numpy(np.ascontiguousarray(sub)))
        else:
            try:
                target = predicted_mask_target(ma.model, x, ma.threshold)
            except Exception:  # AttributionError: nothing predicted in the crop
                target = patch_target(*sub.shape)
        out.append(san.Case(p.patch_id, x, target))
    return out


def train_arrays(
    paths: RunPaths, ma: ModelAccess, crop: int, limit: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to ``limit`` training crops (normalized) and label masks for data randomization."""
    tiles = paths.tiles_index
    if not tiles.is_file():
        return None
    index = gpd.read_file(tiles, layer="tiles") if tiles.suffix == ".gpkg" else None
    if index is None or "split" not in index.columns:
        return None
    xs, ys = [], []
    for pid in index.loc[index["split"] == "train", "patch_id"].astype(str).tolist()[:limit]:
        if not (paths.image(pid).is_file() and paths.mask(pid).is_file()):
            continue
        image, grid, bands = read_image(paths.image(pid))
        mask = read_band(paths.mask(pid), grid)
        if bands != ma.bands or mask is None:
            continue
        win = crop_window(mask.astype(bool), crop)
        xs.append(ma.normalize(image[:, win[0], win[1]].astype(np.float32)))
        ys.append(torch.from_numpy(mask[win].astype(np.float32)))
    if not xs:
        return None
    return torch.stack(xs), torch.stack(ys)


def run_sanity(
    cases: list[san.Case], ma: ModelAccess, explain: ExplainFn, cfg: RunConfig, paths: RunPaths
) -> dict[str, Any]:
    """``sanity.json`` payload."""
    a = cfg.audit
    methods = list(a.sanity_methods)
    payload: dict[str, Any] = {
        "methods": methods,
        "patches": [c.patch_id for c in cases],
        "crop": a.sanity_crop,
        "max_similarity": a.max_similarity,
        "expected_failures": ["guided_backprop"],
        "criterion": "pass when the Spearman rank correlation of |maps| at the last step "
        f"is below {a.max_similarity}",
    }
    if not cases or not methods:
        payload["skipped"] = "no patch usable for the checks" if not cases else "no methods"
        return payload
    errors: dict[str, str] = {}
    originals: dict[tuple[str, str], np.ndarray] = {}
    for m in list(methods):
        try:  # a method that cannot run here is recorded, not fatal
            originals |= san.original_maps(explain, ma.model, [m], cases, cfg.run.seed)
        except Exception as err:  # AttributionError, budget errors
            errors[m] = str(err)
            methods.remove(m)
    payload["errors"] = errors
    payload["model_randomization"] = san.model_randomization(
        explain,
        ma.model,
        methods,
        cases,
        steps=a.cascade_steps,
        seed=cfg.run.seed,
        max_similarity=a.max_similarity,
        originals=originals,
    )
    data = train_arrays(paths, ma, a.sanity_crop, limit=8) if a.data_randomization_steps else None
    if data is None:
        payload["data_randomization"] = {
            "skipped": "disabled (audit.data_randomization_steps = 0)"
            if not a.data_randomization_steps
            else "no training patches with masks found"
        }
    else:
        shuffled, loss = san.train_shuffled(
            ma.model, *data, steps=a.data_randomization_steps, seed=cfg.run.seed
        )
        for prm in shuffled.parameters():
            prm.requires_grad_(False)
        payload["data_randomization"] = {
            "steps": a.data_randomization_steps,
            "train_patches": int(data[0].shape[0]),
            "final_loss": loss,
            "methods": san.data_randomization(
                explain,
                ma.model,
                shuffled,
                methods,
                cases,
                seed=cfg.run.seed,
                max_similarity=a.max_similarity,
                originals=originals,
            ),
        }
    return payload


def run_faithfulness(
    cases: list[san.Case], ma: ModelAccess, explain: ExplainFn, cfg: RunConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Faithfulness rows and curves per (patch, method)."""
    a = cfg.audit
    methods = list(a.faithfulness_methods or cfg.attribute.methods)
    rows, curves = [], []
    for case in cases:
        x = case.x
        segs = fth.superpixels(x[0].numpy(), a.faithfulness_superpixels)
        score = fth.mean_prob_fn(ma.model, case.target)
        for m in methods:
            base: dict[str, Any] = {"patch_id": case.patch_id, "method": m}
            try:
                values = explain(m, ma.model, x, case.target, cfg.run.seed)
            except Exception as err:  # AttributionError and budget errors: recorded, not fatal
                rows.append({**base, "status": "error", "reason": str(err)})
                continue
            order = fth.rank_segments(values.sum(axis=0), segs)
            baseline = torch.zeros_like(x)
            dele = fth.perturbation_curve(
                score, x, baseline, segs, order, steps=a.faithfulness_steps, mode="deletion"
            )
            ins = fth.perturbation_curve(
                score, x, baseline, segs, order, steps=a.faithfulness_steps, mode="insertion"
            )
            attr = torch.from_numpy(values)[None]
            infid = fth.infidelity_score(
                ma.model, case.target, x, attr, n_samples=a.infidelity_samples, seed=cfg.run.seed
            )

            def batch_explain(
                xb: torch.Tensor | tuple[torch.Tensor, ...], _m: str = m, _t: Target = case.target
            ) -> torch.Tensor:
                xb = xb[0] if isinstance(xb, tuple) else xb  # captum may pass a tuple
                return torch.stack(
                    [
                        torch.from_numpy(explain(_m, ma.model, xi[None], _t, cfg.run.seed))
                        for xi in xb
                    ]
                )

            sens = fth.sensitivity_score(
                batch_explain, x, n_samples=a.sensitivity_samples, seed=cfg.run.seed
            )
            rows.append(
                {
                    **base,
                    "status": "ok",
                    "reason": "",
                    "deletion_auc": dele.auc,
                    "insertion_auc": ins.auc,
                    "infidelity": infid,
                    "sensitivity_max": sens,
                    "n_superpixels": len(order),
                }
            )
            curves.append(
                {
                    **base,
                    "fractions": dele.fractions.tolist(),
                    "deletion": dele.probs.tolist(),
                    "insertion": ins.probs.tolist(),
                }
            )
    return rows, curves


# ------------------------------------------------------------------------------------- stage
def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _flags_gpkg(path: Path, flags: pd.DataFrame, polygons: dict[tuple[str, str], Any]) -> Path:
    geoms = [polygons.get((k, t)) for k, t in zip(flags["target"], flags["target_id"], strict=True)]
    gdf = gpd.GeoDataFrame(flags.copy(), geometry=geoms, crs="EPSG:4326")
    for col in gdf.columns:
        if col != "geometry" and gdf[col].dtype == object:
            gdf[col] = gdf[col].astype(str)
    with atomic_path(path) as tmp:
        gdf.to_file(tmp, layer="flags", driver="GPKG")
    return path


def run(cfg: RunConfig, paths: RunPaths) -> StageOutput:
    """Audit every attribution of the run for reliance on cues; check the explanations."""
    a = cfg.audit
    flg.check_thresholds(a.enrichment_threshold, a.min_effect, a.counterfactual_threshold)
    out_dir = paths.stage_dir("audit")
    index = read_attribution_index(paths, cfg.run.name)
    analyst = analyst_cues(cfg)
    polygons = read_farm_polygons(paths, set(index["target"]))

    patches: dict[str, PatchData] = {}
    cue_table: list[dict[str, Any]] = []
    reliance_rows: list[dict[str, Any]] = []
    stats: dict[tuple[str, str, str, str], TargetStats] = {}
    tmasks: dict[tuple[str, str, str], np.ndarray] = {}
    skipped: dict[str, int] = {}
    for pid, rows in index.groupby("patch_id", sort=True):
        p = load_patch(paths, cfg, str(pid), analyst)
        patches[p.patch_id] = p
        cue_table.extend(cue_rows(p))
        for _, row in rows.iterrows():
            tmask = target_mask(row, p, polygons)
            if tmask is None:
                reason = f"no polygon for {row['target']} {row['target_id']}"
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            if row["target"] in FARM_TARGETS:
                tmasks[(p.patch_id, str(row["target"]), str(row["target_id"]))] = tmask
            reliance_rows.extend(reliance_for_row(row, p, tmask, cfg, paths, stats))
    for reason, n in skipped.items():
        log.warning("skipped %d attribution rows: %s", n, reason)

    # farm flags: pool each farm's units (blocks, so a one-patch farm gets a CI too)
    per_method = [
        pooled_row(k, st, st.block_units, cfg) for k, st in stats.items() if k[0] in FARM_TARGETS
    ]
    flag_rows: list[dict[str, Any]] = []
    need_model = bool(per_method)
    ma = (
        load_model_access(paths)
        if need_model or a.sanity_patches or a.faithfulness_patches
        else None
    )
    if per_method:
        pm = pd.DataFrame(per_method)
        for (_kind, _tid, _cue), grp in pm.groupby(["target", "target_id", "cue"], sort=True):
            best = flg.best_method(grp).to_dict()
            best["methods_flagged"] = json.dumps(sorted(grp.loc[grp["flagged"], "method"]))
            cf: dict[str, Any] = {"cf_status": "not_run", "cf_reason": ""}
            wants_cf = (
                best["computable"]
                and best["cue_present"]
                and (best["flagged"] or a.counterfactual_scope == "all")
            )
            if wants_cf and ma is not None:
                key = (best["target"], best["target_id"])
                cases = sorted(
                    (
                        (patches[q], tmasks[(q, *key)])
                        for q in json.loads(best["patch_ids"])
                        if (q, *key) in tmasks
                    ),
                    key=lambda c: -int(c[1].sum()),  # the patch holding most of it first
                )
                cf = run_counterfactual(best, cases, ma, cfg)
            moved = cf.get("moved") if cf.get("cf_status") == "ok" else None
            best.update(cf)
            best["verdict"] = flg.verdict(
                computable=bool(best["computable"]),
                cue_present=bool(best["cue_present"]),
                flagged=bool(best["flagged"]),
                moved=moved,
            )
            flag_rows.append(best)
    flag_cols = [
        "target",
        "target_id",
        "cue",
        "method",
        "methods_flagged",
        "verdict",
        "enrichment",
        "ci_low",
        "ci_high",
        "attr_share",
        "area_share",
        "effect",
        "swir_share",
        "flagged",
        "score",
        "score_cf",
        "score_change",
        "prob",
        "prob_cf",
        "prob_change",
        "logit_change",
        "mask_iou",
        "n_replaced",
        "moved",
        "moved_by",
        "placebo_prob_change",
        "placebo_logit_change",
        "placebo_replaced",
        "specific",
        "cf_patch",
        "cf_status",
        "cf_reason",
        "computable",
        "cue_present",
        "reason",
        "patch_ids",
        "n_patches",
    ]
    flags = pd.DataFrame(flag_rows).reindex(columns=flag_cols)

    run_flags = run_level(stats, cfg)
    # explanation checks on a budget: patches with flagged farms first, then the largest farms
    ranked = sorted(
        tmasks.items(),
        key=lambda kv: (
            -int(((flags["target_id"] == kv[0][2]) & (flags["verdict"] == "confirmed")).any()),
            -int(kv[1].sum()),
        ),
    )
    chosen: list[tuple[PatchData, np.ndarray | None]] = []
    for (pid, _k, _t), tm in ranked:
        if pid not in {c[0].patch_id for c in chosen}:
            chosen.append((patches[pid], tm))
    if not chosen:
        chosen = [(p, None) for p in patches.values()]
    explain = make_explainer(cfg.attribute, ig_steps=a.sanity_ig_steps)
    sanity: dict[str, Any] = {"skipped": "audit.sanity_patches = 0"}
    faith_rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    if ma is not None and a.sanity_patches:
        sanity = run_sanity(
            check_cases(chosen[: a.sanity_patches], ma, a.sanity_crop, whole_patch=True),
            ma,
            explain,
            cfg,
            paths,
        )
    if ma is not None and a.faithfulness_patches:
        faith_rows, curves = run_faithfulness(
            check_cases(chosen[: a.faithfulness_patches], ma, a.sanity_crop), ma, explain, cfg
        )

    outputs = [
        _write_csv(out_dir / "cues.csv", pd.DataFrame(cue_table)),
        _write_csv(paths.reliance, pd.DataFrame(reliance_rows)),
        _write_csv(out_dir / "run_flags.csv", run_flags),
        _write_csv(out_dir / "flags.csv", flags),
        _flags_gpkg(out_dir / "flags.gpkg", flags, polygons),
        write_json(out_dir / "sanity.json", sanity),
        _write_csv(out_dir / "faithfulness.csv", pd.DataFrame(faith_rows)),
        write_json(out_dir / "faithfulness_curves.json", curves),
    ]
    not_computable = sum(1 for r in cue_table if r["status"] == "not_computable")
    summary = {
        "patches": len(patches),
        "attributions": len(index),
        "reliance_rows": len(reliance_rows),
        "farm_rows": len(flags),
        "cues_not_computable": not_computable,
        "skipped_rows": skipped,
        "per_cue": flg.run_summary(flags) if len(flags) else {},
        "run_flags": int(run_flags["flagged"].sum()) if len(run_flags) else 0,
        "sanity_pass": {
            m: v.get("pass")
            for m, v in sanity.get("model_randomization", {}).get("methods", {}).items()
        },
    }
    return StageOutput(outputs, summary)
