"""Config loading, CLI errors, atomic writes and the raster export profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.bands import BANDS
from pipeline.cli import main
from pipeline.config import config_digest, load_config, parse_overrides
from pipeline.errors import ConfigError, RasterError
from pipeline.geo.raster import read_patch, read_raster, write_cog
from pipeline.io import atomic_path

CONFIGS = sorted(Path("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.run.name == path.stem


def test_unknown_key_names_key_and_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*epochs"):
        load_config("configs/demo.yaml", ["train.epoch=3"])


def test_bad_value_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"train\.epochs = -3"):
        load_config("configs/demo.yaml", ["train.epochs=-3"])


def test_override_changes_only_its_sections_digest() -> None:
    base = load_config("configs/demo.yaml")
    changed = load_config("configs/demo.yaml", ["train.epochs=2"])
    assert changed.train.epochs == 2
    assert config_digest(base, ["train"]) != config_digest(changed, ["train"])
    assert config_digest(base, ["labels"]) == config_digest(changed, ["labels"])


def test_parse_overrides_rejects_malformed() -> None:
    assert parse_overrides(["a.b=1", "a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_overrides(["nonsense"])


def test_cli_reports_config_error_and_exits_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["labels", "--config", "configs/demo.yaml", "--set", "labels.bogus=1"])
    assert code != 0
    err = capsys.readouterr().err
    assert "unknown key 'labels.bogus'" in err
    assert "Traceback" not in err


def test_cli_missing_upstream_names_make_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["tiles", "--config", "configs/demo.yaml", "--set", f"run.data_root={tmp_path}"])
    assert code != 0
    assert "make labels RUN=demo" in capsys.readouterr().err


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert final.read_text() == "old"
    assert list(tmp_path.iterdir()) == [final]


def test_cog_keeps_grid_bands_tags(make_patch, utm_grid) -> None:
    path = make_patch("a", seed=3)
    array, grid, _ = read_patch(path)
    assert grid == utm_grid
    assert array.shape == (len(BANDS), 64, 64) and array.dtype == np.uint16
    with rasterio.open(path) as src:
        assert src.descriptions == BANDS
        assert src.profile["tiled"] and src.nodata == 0
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_wrong_band_order_is_rejected(tmp_path: Path, utm_grid) -> None:
    array = np.ones((len(BANDS), 64, 64), np.uint16)
    path = write_cog(tmp_path / "x.tif", array, utm_grid, band_names=tuple(reversed(BANDS)))
    with pytest.raises(RasterError, match="required, in that order"):
        read_patch(path)


def test_corrupt_geotiff_gives_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(RasterError, match="corrupt or truncated"):
        read_raster(bad)


def test_data_root_placeholder_relocates_world_paths(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"run.data_root={tmp_path}"])
    assert cfg.labels.osm_file == tmp_path / "worlds" / "demo" / "world.osm.pbf"
    assert cfg.fetch.catalog == f"{tmp_path}/worlds/demo/stac/catalog.json"
