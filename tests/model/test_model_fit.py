"""Real Lightning fits on generated tiles: reload, resume, and both stages through the runner."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import lightning as L
import numpy as np
import pytest
import rasterio
import torch
from support.model import make_run

from pipeline.bands import BANDS
from pipeline.config import RunConfig
from pipeline.errors import ModelError, RasterError
from pipeline.geo.raster import read_raster
from pipeline.manifest import manifest_digest
from pipeline.model.data import TilesDataModule, read_band_stats, read_tiles_index
from pipeline.model.fit import (
    fit_key,
    fit_model,
    load_checkpoint_weights,
)
from pipeline.model.io import ModelMeta, load_model, save_model
from pipeline.model.module import SegmentationModule
from pipeline.paths import RunPaths
from pipeline.stages import run_stage


class Interrupt(L.Callback):
    """Stops the fit with an exception once the first epoch's checkpoint is written."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise KeyError("simulated interruption")


def _fit(cfg: RunConfig, paths: RunPaths, callbacks=()):
    records = read_tiles_index(paths.tiles_index, paths.root)
    stats = read_band_stats(paths.band_stats)
    dm = TilesDataModule(records, stats, cfg.train, cfg.run.seed)
    module = SegmentationModule.from_config(cfg.train, len(BANDS))
    key = fit_key(cfg.train, "digest", cfg.run.seed)
    result = fit_model(
        cfg.train,
        dm,
        module,
        out_dir=paths.stage_dir("train"),
        ckpt_dir=paths.checkpoints,
        logs_dir=paths.train_logs,
        key=key,
        seed=cfg.run.seed,
        extra_callbacks=callbacks,
    )
    return result, dm


def test_fit_reload_equals_memory_and_resume_continues(tmp_path: Path) -> None:
    cfg, paths = make_run(tmp_path, n_per_split={"train": 8, "val": 4})
    with pytest.raises(KeyError, match="simulated interruption"):
        _fit(cfg, paths, callbacks=[Interrupt()])
    last = paths.checkpoints / "last.ckpt"
    blob = torch.load(last, map_location="cpu", weights_only=True)  # no unpickling needed
    steps_per_epoch = 2  # 8 tiles, batch 4
    assert blob["global_step"] == steps_per_epoch
    assert blob["hyper_parameters"]["arch"]["decoder_channels"] == [32, 16, 8]

    result, dm = _fit(cfg, paths)  # the re-run resumes from last.ckpt
    assert result.resumed_from_step == steps_per_epoch
    assert result.global_step == cfg.train.epochs * steps_per_epoch
    assert result.epochs == cfg.train.epochs and result.precision == "32-true"
    assert result.best_path is not None and np.isfinite(result.best_val_loss)

    x = next(iter(dm.eval_dataloader("val")))[0]
    with torch.no_grad():
        expected = result.module.net(x)
    fresh = SegmentationModule.from_config(cfg.train, len(BANDS)).eval()
    load_checkpoint_weights(fresh, result.best_path)
    meta = ModelMeta(bands=BANDS, mean=(0.0,) * 10, std=(1.0,) * 10, arch=result.module.arch)
    save_model(tmp_path / "model.pt", result.module.net, meta)
    loaded, meta2 = load_model(tmp_path / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(fresh.net(x), expected)
        torch.testing.assert_close(loaded(x), expected)
    assert meta2 == meta

    # the interrupted and resumed fit ends bit for bit where an uninterrupted one does: every
    # epoch's draws come from (seed, epoch), not from a random state the checkpoint lacks
    cfg_b, paths_b = make_run(tmp_path / "uninterrupted", n_per_split={"train": 8, "val": 4})
    _fit(cfg_b, paths_b)
    resumed = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    straight = torch.load(paths_b.checkpoints / "last.ckpt", weights_only=True)["state_dict"]
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)


def test_empty_validation_split_is_refused(tmp_path: Path) -> None:
    cfg, paths = make_run(tmp_path, n_per_split={"train": 4, "test": 2})
    with pytest.raises(ModelError, match="no 'val' tiles"):
        _fit(cfg, paths)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, RunPaths, dict]:
    tmp = tmp_path_factory.mktemp("stages")
    cfg, paths = make_run(tmp, overrides=["predict.min_polygon_area_m2=0", "train.epochs=3"])
    train = run_stage("train", cfg)
    predict = run_stage("predict", cfg)
    return cfg, paths, {"train": train, "predict": predict}


def test_train_stage_exports_model_with_meta(trained) -> None:
    cfg, paths, manifests = trained
    summary = manifests["train"].summary
    assert summary["epochs"] == 3 and summary["steps"] == 6 and summary["device"] == "cpu"
    assert set(summary["metrics"]) == {"train", "val", "test"}
    assert "train/model.pt" in manifests["train"].outputs
    _, meta = load_model(paths.model)
    stats = json.loads(paths.band_stats.read_text())
    assert meta.bands == BANDS and list(meta.mean) == pytest.approx(stats["mean"])
    assert meta.data_digest == manifest_digest(paths.manifest("tiles"))
    assert meta.arch.encoder_depth == 3 and 0 < meta.threshold < 1
    assert meta.extra["seed"] == 0 and meta.extra["epochs"] == 3
    assert summary["threshold"] == meta.threshold
    # unchanged inputs and config: the runner skips the stage
    assert run_stage("train", cfg).seconds == manifests["train"].seconds


def test_predict_stage_outputs_on_the_input_grid(trained) -> None:
    _, paths, manifests = trained
    records = read_tiles_index(paths.tiles_index, paths.root)
    _, meta = load_model(paths.model)
    for record in records[:3]:
        image_grid = read_raster(record.image)[1]
        prob, grid, _ = read_raster(paths.probability(record.patch_id))
        mask, mgrid, _ = read_raster(paths.predicted_mask(record.patch_id))
        assert grid == image_grid and mgrid == image_grid
        assert np.nanmin(prob) >= 0 and np.nanmax(prob) <= 1
        np.testing.assert_array_equal(mask[0], (prob[0] >= meta.threshold).astype(np.uint8))
        with rasterio.open(paths.predicted_mask(record.patch_id)) as ds:
            assert ds.descriptions == ("mask",) and ds.dtypes == ("uint8",)
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["threshold"] == meta.threshold and metrics["threshold_rule"] == "model"
    assert set(metrics["pixel"]) == {"train", "val", "test"}
    for split in ("val", "test"):
        assert 0 <= metrics["object"][split]["precision"] <= 1
        assert metrics["pixel"][split]["tp"] + metrics["pixel"][split]["fn"] > 0
    farms = gpd.read_file(paths.predicted_farms, layer="farms")
    assert farms.crs.to_epsg() == 4326
    assert {"pred_id", "patch_id", "area_m2", "mean_prob", "max_prob"} <= set(farms.columns)
    fp = gpd.read_file(paths.stage_dir("predict") / "false_positives.gpkg")
    missed = gpd.read_file(paths.stage_dir("predict") / "missed.gpkg")
    n_objects = sum(metrics["object"][s]["n_pred"] for s in metrics["object"])
    n_matched = sum(metrics["object"][s]["matched"] for s in metrics["object"])
    n_truth = sum(metrics["object"][s]["n_truth"] for s in metrics["object"])
    assert len(farms) == n_objects and len(fp) == n_objects - n_matched
    assert len(missed) == n_truth - n_matched
    assert (paths.stage_dir("predict") / "metrics.png").stat().st_size > 1000
    assert manifests["predict"].summary["oom_halvings"] == 0


def test_predict_stage_with_auto_threshold(trained) -> None:
    cfg, paths, _ = trained
    auto = cfg.model_copy(update={"predict": cfg.predict.model_copy(update={"threshold": "auto"})})
    manifest = run_stage("predict", auto)
    assert manifest.summary["threshold_rule"] in (
        "validation-optimal IoU",
        "model (no validation positives)",
    )
    assert json.loads(paths.metrics.read_text())["threshold"] == manifest.summary["threshold"]


def test_predict_stage_covers_extra_rasters_of_any_size(trained, tmp_path: Path) -> None:
    from affine import Affine
    from rasterio.crs import CRS

    from pipeline.geo.raster import Grid, write_cog

    cfg, paths, _ = trained
    rng = np.random.default_rng(3)
    scene = np.clip(rng.normal(1500, 200, (len(BANDS), 150, 210)), 1, 10000).astype(np.uint16)
    grid = Grid(
        CRS.from_epsg(32618), Affine(10.0, 0.0, 450_000.0, 0.0, -10.0, 4_170_000.0), 150, 210
    )
    src = write_cog(tmp_path / "mosaic.tif", scene, grid, band_names=BANDS, nodata=0)
    with_scene = cfg.model_copy(
        update={"predict": cfg.predict.model_copy(update={"rasters": (src,)})}
    )
    manifest = run_stage("predict", with_scene)
    assert set(manifest.summary["rasters"]) == {"mosaic.tif"}
    out = paths.stage_dir("predict") / "rasters"
    with rasterio.open(out / "mosaic_probability.tif") as prob:
        assert (prob.crs, prob.transform, prob.shape) == (grid.crs, grid.transform, grid.shape)
        values = prob.read(1)
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    with rasterio.open(out / "mosaic_mask.tif") as mask:
        assert mask.shape == grid.shape
    assert (out / "mosaic_farms.gpkg").is_file()
    missing = cfg.model_copy(
        update={"predict": cfg.predict.model_copy(update={"rasters": (tmp_path / "no.tif",)})}
    )
    with pytest.raises(RasterError, match=r"predict\.rasters lists"):
        run_stage("predict", missing, force=True)
