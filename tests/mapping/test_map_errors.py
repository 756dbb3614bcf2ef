"""Bad input: one clear error and a non-zero exit from the CLI, before any work is published."""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import pytest
import yaml
from support.mapping import World, write_labels

from pipeline.bands import BANDS
from pipeline.cli import main
from pipeline.manifest import Manifest
from pipeline.model.io import Arch, ModelMeta, build_unet, save_model
from pipeline.paths import RunPaths


@pytest.fixture
def run_dir(world: World, tmp_path: Path) -> tuple[Path, RunPaths]:
    """A run with labels (farms, AOI), a tiny U-Net and the upstream manifests; its config."""
    paths = RunPaths(tmp_path / "data", "t")
    write_labels(paths, world.farms, world.epsg)
    gpd.GeoDataFrame(geometry=[world.area], crs=4326).to_file(paths.aoi, layer="aoi")
    arch = Arch("resnet18", 3, (16, 8, 8))
    meta = ModelMeta(BANDS, tuple([1000.0] * 10), tuple([500.0] * 10), arch, threshold=0.5)
    save_model(paths.model, build_unet(arch), meta)
    for stage in ("labels", "train"):
        Manifest(stage, "x", {}, [], {}, 0.0, {}).write(paths.manifest(stage))
    config = {
        "run": {"name": "t", "data_root": str(paths.data_root)},
        "labels": {"source": "file", "osm_file": "x.osm.pbf"},
        "fetch": {
            "catalog": str(world.catalog),
            "provider": "static",
            "datetime": "2023-07-01/2023-07-31",
            "retries": 0,
            "progress": False,
        },
        "predict": {"window": 128, "overlap": 32, "device": "cpu"},
        "map": {"chunk_px": 256, "halo_px": 32, "farm_patches": False},
        "compute": {"workers": 1, "connect_timeout_s": 2},
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, paths


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("map.datetime=2019-01-01/2019-01-31", r"no Sentinel-2 item in .* intersects the area"),
        ("map.area_bbox=[10.0, 10.0, 10.1, 10.1]", r"no Sentinel-2 item in .* intersects the area"),
        ("compute.scheduler=tcp://127.0.0.1:9", r"cannot reach the Dask scheduler at tcp://127\.0"),
    ],
    ids=["no-imagery-in-window", "area-outside-every-item", "unreachable-scheduler"],
)
def test_bad_input_is_one_clear_error(
    run_dir: tuple[Path, RunPaths],
    override: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, paths = run_dir
    code = main(["map", "--config", str(config), "--set", override])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), err
    assert "map." in lines[0] or "compute.scheduler" in lines[0]  # names the key to fix
    assert not paths.map_farms.exists() and not paths.manifest("map").exists()


def test_missing_labels_aoi_names_the_fix(
    run_dir: tuple[Path, RunPaths], capsys: pytest.CaptureFixture[str]
) -> None:
    config, paths = run_dir
    paths.aoi.unlink()
    assert main(["map", "--config", str(config)]) == 2
    assert "labels" in capsys.readouterr().err
