"""A miniature attributed run, built in code, for the audit and report tests.

Two 64 x 64 patches in UTM 18N, each with one labelled farm (bright-ish dark panels) and a snow
blob beside it: ``p0`` has an SCL raster (snow = class 11), ``p1`` has none (snow by NDSI).
Attributions are written as real COGs: on ``p0`` the maps concentrate on the snow (a model that
"relies" on it), on ``p1`` they are uniform. A tiny random smp U-Net is the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from pipeline.bands import BANDS
from pipeline.config import RunConfig, load_config
from pipeline.geo.raster import Grid, write_cog
from pipeline.model.io import Arch, ModelMeta, build_unet, save_model
from pipeline.paths import RunPaths

SIZE = 64
#: Farm rows/cols and snow rows/cols (pixel slices) on every patch.
FARM = (slice(24, 40), slice(8, 24))
SNOW = (slice(20, 44), slice(40, 56))

#: Typical January reflectance x 10000 per band: soil, panels, snow.
SOIL = np.array([600, 800, 900, 1300, 1800, 2000, 2200, 2300, 2600, 1900], np.uint16)
PANEL = np.array([500, 550, 500, 550, 600, 650, 700, 700, 900, 700], np.uint16)
SNOWY = np.array([8500, 8600, 8500, 8300, 8000, 7800, 7600, 7400, 900, 700], np.uint16)


def grid(i: int) -> Grid:
    return Grid(
        CRS.from_epsg(32618),
        Affine(10.0, 0, 440_000.0 + i * 2000, 0, -10.0, 4_170_000.0),
        SIZE,
        SIZE,
    )


def patch_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.broadcast_to(SOIL[:, None, None], (len(BANDS), SIZE, SIZE)).astype(np.int32)
    img = img + rng.integers(-50, 50, size=img.shape)
    img[:, FARM[0], FARM[1]] = PANEL[:, None, None]
    img[:, SNOW[0], SNOW[1]] = SNOWY[:, None, None]
    return np.clip(img, 1, 10000).astype(np.uint16)


def region_mask(sl: tuple[slice, slice]) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    m[sl] = True
    return m


def farm_polygon(g: Grid) -> object:
    """The FARM pixel block as a polygon in EPSG:4326 (pixel-centre exact)."""
    left, top = g.transform @ (FARM[1].start, FARM[0].start)
    right, bottom = g.transform @ (FARM[1].stop, FARM[0].stop)
    return gpd.GeoSeries([box(left, bottom, right, top)], crs=g.crs).to_crs(4326).iloc[0]


def attribution(kind: str, seed: int) -> np.ndarray:
    """``(11, H, W)`` float32: per-band values + aggregate; ``snow`` or ``uniform`` outside."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 0.1, size=(len(BANDS), SIZE, SIZE)).astype(np.float32)
    values[:, FARM[0], FARM[1]] += 1.0
    if kind == "snow":
        values[:, SNOW[0], SNOW[1]] += 2.0
        values[BANDS.index("B11"), SNOW[0], SNOW[1]] += 6.0
    aggregate = np.abs(values).max(axis=0)
    return np.concatenate([values, aggregate[None]]).astype(np.float32)


_CACHE: dict[str, tuple[RunConfig, RunPaths]] = {}


def audited_run(root: Path) -> tuple[RunConfig, RunPaths]:
    """:func:`build_run`, then the audit and report stages; built once per test session."""
    if "run" not in _CACHE:
        from pipeline.stages import audit, report

        cfg, paths = build_run(root)
        audit.run(cfg, paths)
        report.run(cfg, paths)
        _CACHE["run"] = (cfg, paths)
    return _CACHE["run"]


def build_run(root: Path, *, overrides: tuple[str, ...] = ()) -> tuple[RunConfig, RunPaths]:
    """Write the miniature run under ``root`` and return its config and paths."""
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"run.data_root={root}",
            "run.name=mini",
            "audit.bootstrap=200",
            "audit.block_px=16",
            "audit.sanity_patches=1",
            "audit.sanity_crop=32",
            "audit.cascade_steps=2",
            "audit.data_randomization_steps=2",
            "audit.sanity_ig_steps=4",
            "audit.faithfulness_patches=1",
            "audit.faithfulness_steps=4",
            "audit.faithfulness_superpixels=8",
            "audit.infidelity_samples=2",
            "audit.sensitivity_samples=1",
            "audit.counterfactual_scope=all",
            "attribute.methods=[saliency, integrated_gradients]",
            "audit.sanity_methods=[saliency, guided_backprop]",
            "audit.faithfulness_methods=[saliency]",
            *overrides,
        ],
    )
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    farms, tiles, rows = [], [], []
    for i, pid in enumerate(("p0", "p1")):
        g = grid(i)
        write_cog(paths.image(pid), patch_image(i), g, band_names=BANDS, nodata=0)
        if pid == "p0":
            scl = np.full((1, SIZE, SIZE), 4, np.uint8)
            scl[0][SNOW] = 11
            write_cog(
                paths.scl(pid), scl, g, band_names=["SCL"], nodata=0, overview_resampling="nearest"
            )
        farm = region_mask(FARM).astype(np.uint8)[None]
        write_cog(
            paths.mask(pid),
            farm,
            g,
            band_names=["farm"],
            nodata=None,
            overview_resampling="nearest",
        )
        write_cog(
            paths.predicted_mask(pid),
            farm,
            g,
            band_names=["mask"],
            nodata=None,
            overview_resampling="nearest",
        )
        fid = f"w{i + 1}"
        farms.append({"farm_id": fid, "osm_id": i + 1, "geometry": farm_polygon(g)})
        tiles.append({"patch_id": pid, "split": "train", "geometry": farm_polygon(g)})
        kind = "snow" if pid == "p0" else "uniform"
        for method in ("saliency", "integrated_gradients"):
            for target, tid in (("label_farms", fid), ("predicted_mask", "")):
                raster = paths.attribution(f"{pid}__{tid}" if tid else pid, method, target)
                write_cog(
                    raster,
                    attribution(kind, i),
                    g,
                    band_names=[*BANDS, "aggregate"],
                    nodata=float("nan"),
                )
                rows.append(
                    {
                        "patch_id": pid,
                        "method": method,
                        "target": target,
                        "target_id": tid,
                        "path": paths.relative(raster),
                        "score": 1.0,
                        "baseline_score": 0.0,
                        "completeness_gap": 0.0,
                        "gap_flag": False,
                        "seconds": 0.1,
                        "target_pixels": 256,
                        "status": "ok",
                        "reason": "",
                    }
                )
    for folder in ("labels", "tiles", "attribute", "predict"):
        paths.stage_dir(folder).mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(farms, crs=4326).to_file(paths.farms, layer="farms", driver="GPKG")
    gpd.GeoDataFrame(tiles, crs=4326).to_file(paths.tiles_index, layer="tiles", driver="GPKG")
    pd.DataFrame(rows).to_csv(paths.attribution_index, index=False)
    torch.manual_seed(0)
    arch = Arch(encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    meta = ModelMeta(
        bands=BANDS,
        mean=tuple(float(v) for v in SOIL),
        std=tuple(1000.0 for _ in BANDS),
        arch=arch,
        threshold=0.5,
    )
    save_model(paths.model, build_unet(arch), meta)
    write_scores(paths, tiles)
    return cfg, paths


#: A short training log as Lightning's CSVLogger writes it (step rows, then epoch rows).
TRAIN_LOG = """epoch,step,train/loss_step,train/loss_epoch,val/loss,val/iou
0,4,1.2,,,
0,9,1.0,1.1,0.9,0.2
1,14,0.8,,,
1,19,0.7,0.75,0.6,0.5
2,24,0.6,0.62,0.65,0.45
"""


def write_scores(paths: RunPaths, tiles: list[dict]) -> None:
    """The predict stage's scores, the training log and the fetch index of the miniature run."""
    pixel = {"iou": 0.5, "f1": 0.667, "precision": 0.6, "recall": 0.75}
    objects = {"precision": 0.5, "recall": 1.0, "matched": 1, "n_truth": 1, "n_pred": 2}
    metrics = {
        "threshold": 0.5,
        "threshold_rule": "model",
        "match_iou": 0.5,
        "pixel": {"train": pixel, "test": {**pixel, "iou": 0.25}},
        "object": {"train": objects, "test": objects},
    }
    paths.metrics.write_text(json.dumps(metrics))
    paths.train_metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.train_metrics.write_text(TRAIN_LOG)
    footprints = [
        {
            "patch_id": t["patch_id"],
            "status": "ok",
            "geometry": gpd.GeoSeries([box(*grid(i).bounds)], crs=grid(i).crs).to_crs(4326)[0],
        }
        for i, t in enumerate(tiles)
    ]
    paths.stage_dir("fetch").mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(footprints, crs=4326).to_file(
        paths.fetch_index, layer="patches", driver="GPKG"
    )


@pytest.fixture(scope="session")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, RunPaths]:
    """The miniature run after the audit and report stages (built once per session)."""
    return audited_run(tmp_path_factory.mktemp("audited"))
