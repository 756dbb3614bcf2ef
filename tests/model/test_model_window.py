"""Sliding-window prediction: coverage, seams, georeferencing, bad input, out-of-memory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from torch import nn

from pipeline.bands import BANDS
from pipeline.errors import GeoMismatchError, ModelError, RasterError
from pipeline.geo.raster import Grid, read_raster, write_cog
from pipeline.model.io import Arch, ModelMeta, normalize
from pipeline.model.window import (
    Predictor,
    WindowSpec,
    blend_weights,
    predict_raster,
    threshold_raster,
    weight_sum,
    window_offsets,
)

META = ModelMeta(
    bands=BANDS, mean=(1000.0,) * 10, std=(500.0,) * 10, arch=Arch("resnet18", 3, (32, 16, 8))
)


class Constant(nn.Module):
    """Stand-in model: the same logit everywhere."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[-2:]), self.logit, dtype=x.dtype)


class Pointwise(nn.Module):
    """Stand-in model: a fixed 1x1 convolution (the output at a pixel depends on it alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(len(BANDS), 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(-1, 1, len(BANDS)).view(1, -1, 1, 1))
            self.conv.bias.fill_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class OomAbove(Pointwise):
    """Stand-in model that runs out of memory for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def grid_of(height: int, width: int, epsg: int = 32618) -> Grid:
    return Grid(
        CRS.from_epsg(epsg), Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_100_000.0), height, width
    )


def raster(
    tmp_path: Path,
    height: int,
    width: int,
    *,
    name: str = "in",
    seed: int = 0,
    bands: tuple[str, ...] = BANDS,
    dtype: str = "uint16",
    epsg: int = 32618,
) -> Path:
    rng = np.random.default_rng(seed)
    array = rng.integers(100, 3000, size=(len(bands), height, width)).astype(dtype)
    return write_cog(
        tmp_path / f"{name}.tif", array, grid_of(height, width, epsg), band_names=bands, nodata=0
    )


def test_offsets_end_on_the_edge() -> None:
    assert window_offsets(256, 256, 64) == [0]
    assert window_offsets(100, 256, 64) == [0]
    assert window_offsets(300, 128, 32) == [0, 96, 172]
    assert window_offsets(10980, 256, 64)[-1] == 10980 - 256


@pytest.mark.parametrize("shape", [(150, 97), (20, 33), (64, 64), (257, 300)])
@pytest.mark.parametrize("blend", ["hann", "uniform"])
def test_blend_weights_cover_every_pixel(shape: tuple[int, int], blend: str) -> None:
    spec = WindowSpec(window=64, overlap=16, blend=blend)  # type: ignore[arg-type]
    total = weight_sum(*shape, spec)
    assert total.shape == shape
    assert (total > 0).all()
    assert (blend_weights(64, blend) > 0).all()  # type: ignore[arg-type]


def test_constant_model_leaves_no_seams_and_keeps_grid(tmp_path: Path) -> None:
    src = raster(tmp_path, 150, 97)
    out = tmp_path / "prob.tif"
    predictor = Predictor(Constant(0.7), META, torch.device("cpu"), batch_size=3)
    info = predict_raster(src, out, predictor, WindowSpec(64, 16, "hann", 3))
    prob, grid, _ = read_raster(out)
    assert info.windows == len(window_offsets(150, 64, 16)) * len(window_offsets(97, 64, 16))
    np.testing.assert_allclose(prob[0], 1 / (1 + np.exp(-0.7)), rtol=0, atol=1e-6)
    assert grid == read_raster(src)[1]
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("probability",) and ds.dtypes == ("float32",)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


@pytest.mark.parametrize(("shape", "window", "overlap"), [((150, 97), 64, 16), ((40, 50), 256, 64)])
def test_pointwise_model_equals_whole_raster_prediction(
    tmp_path: Path, shape: tuple[int, int], window: int, overlap: int
) -> None:
    src = raster(tmp_path, *shape, seed=1)
    model = Pointwise().eval()
    out = tmp_path / "prob.tif"
    predict_raster(
        src,
        out,
        Predictor(model, META, torch.device("cpu"), 4),
        WindowSpec(window, overlap, "hann", 4),
    )
    image = read_raster(src)[0]
    with torch.no_grad():
        expected = torch.sigmoid(model(normalize(image, META)[None]))[0, 0].numpy()
    np.testing.assert_allclose(read_raster(out)[0][0], expected, atol=1e-5)


def test_nodata_pixels_are_nan_and_mask_is_thresholded(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    array = rng.integers(100, 3000, size=(len(BANDS), 70, 70)).astype("uint16")
    array[:, :5, :] = 0
    src = write_cog(tmp_path / "in.tif", array, grid_of(70, 70), band_names=BANDS, nodata=0)
    model = Pointwise().eval()
    info = predict_raster(
        src, tmp_path / "p.tif", Predictor(model, META, torch.device("cpu")), WindowSpec(64, 16)
    )
    prob = read_raster(tmp_path / "p.tif")[0][0]
    assert info.nodata_pixels == 5 * 70
    assert np.isnan(prob[:5]).all() and np.isfinite(prob[5:]).all()
    positives = threshold_raster(tmp_path / "p.tif", tmp_path / "m.tif", 0.5)
    mask, grid, tags = read_raster(tmp_path / "m.tif")
    assert mask.dtype == np.uint8 and grid == read_raster(src)[1]
    np.testing.assert_array_equal(mask[0], (np.nan_to_num(prob) >= 0.5).astype(np.uint8))
    assert positives == int(mask.sum()) and float(tags["threshold"]) == 0.5


def test_wrong_band_order_or_count_is_refused(tmp_path: Path) -> None:
    predictor = Predictor(Pointwise(), META, torch.device("cpu"))
    for name, bands in [("rev", tuple(reversed(BANDS))), ("few", BANDS[:4])]:
        src = raster(tmp_path, 64, 64, name=name, bands=bands)
        with pytest.raises(ModelError, match="trained on"):
            predict_raster(src, tmp_path / f"{name}_p.tif", predictor, WindowSpec(64, 16))
        assert not (tmp_path / f"{name}_p.tif").exists()


def test_model_from_another_band_set_is_refused(tmp_path: Path) -> None:
    other = ModelMeta(
        bands=("B04", "B03", "B02"),
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        arch=Arch("resnet18", 3, (32, 16, 8), in_channels=3),
    )
    with pytest.raises(ModelError, match=r"trained on \['B04', 'B03', 'B02'\]"):
        predict_raster(
            raster(tmp_path, 64, 64),
            tmp_path / "p.tif",
            Predictor(Pointwise(), other, torch.device("cpu")),
            WindowSpec(64, 16),
        )


def test_reflectance_floats_and_foreign_crs_are_refused(tmp_path: Path) -> None:
    predictor = Predictor(Pointwise(), META, torch.device("cpu"))
    floats = raster(tmp_path, 64, 64, name="f", dtype="float32")
    with pytest.raises(RasterError, match="stored DN integers"):
        predict_raster(floats, tmp_path / "p.tif", predictor, WindowSpec(64, 16))
    other = raster(tmp_path, 64, 64, name="z17", epsg=32617)
    with pytest.raises(GeoMismatchError, match="EPSG:32618 is expected"):
        predict_raster(
            other,
            tmp_path / "p.tif",
            predictor,
            WindowSpec(64, 16),
            expected_crs=CRS.from_epsg(32618),
        )


def test_truncated_patch_is_one_clear_error(tmp_path: Path) -> None:
    src = raster(tmp_path, 256, 256, seed=3)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])  # a download cut short: header intact
    predictor = Predictor(Pointwise(), META, torch.device("cpu"), 4)
    with pytest.raises(RasterError, match=r"in\.tif \(rows .*truncated or corrupt.*make fetch"):
        predict_raster(src, tmp_path / "prob.tif", predictor, WindowSpec(64, 16, "hann", 4))
    assert not (tmp_path / "prob.tif").exists()


def test_window_not_divisible_by_the_network_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="multiple of 8"):
        predict_raster(
            raster(tmp_path, 64, 64),
            tmp_path / "p.tif",
            Predictor(Pointwise(), META, torch.device("cpu")),
            WindowSpec(60, 16),
        )


def test_out_of_memory_halves_the_batch_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = raster(tmp_path, 150, 150, seed=3)
    reference = tmp_path / "ref.tif"
    predict_raster(
        src,
        reference,
        Predictor(Pointwise(), META, torch.device("cpu"), 8),
        WindowSpec(64, 16, "hann", 8),
    )
    predictor = Predictor(OomAbove(limit=1), META, torch.device("cpu"), 8)
    with caplog.at_level(logging.WARNING):
        predict_raster(src, tmp_path / "p.tif", predictor, WindowSpec(64, 16, "hann", 8))
    assert predictor.batch_size == 1 and predictor.halvings == 3
    assert "halving the prediction batch" in caplog.text
    np.testing.assert_allclose(
        read_raster(tmp_path / "p.tif")[0], read_raster(reference)[0], atol=1e-6
    )
    with pytest.raises(ModelError, match="out of memory predicting a single"):
        predict_raster(
            src,
            tmp_path / "q.tif",
            Predictor(OomAbove(0), META, torch.device("cpu")),
            WindowSpec(64, 16),
        )
    assert not (tmp_path / "q.tif").exists()
