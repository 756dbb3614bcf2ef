"""Config files: ``extends:`` chains, world paths derived from ``world.name``, the block size
set once, and the shipped configs stating only their differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_config
from pipeline.config.encoders import encoder_problem
from pipeline.config.files import read_config
from pipeline.errors import ConfigError
from pipeline.paths import WorldPaths

BASE = {
    "run": {"name": "base", "seed": 3},
    "labels": {"osm_file": "a.osm.pbf", "negative_buffer_m": 300},
    "fetch": {"catalog": "https://example.invalid/stac", "datetime": "2023-06-01/2023-06-30"},
    "train": {"epochs": 5, "decoder_channels": [8, 8, 8, 8, 8], "lr": 0.01},
    "attribute": {"max_targets": {"integrated_gradients": 8}},
}


def _write(folder: Path, name: str, values: dict[str, Any]) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def test_extends_merges_base_then_own_keys_then_overrides(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", BASE)
    child = _write(
        tmp_path,
        "child.yaml",
        {
            "extends": "base.yaml",
            "run": {"name": "child"},
            "train": {"epochs": 7, "decoder_channels": [4, 4, 4, 4, 4]},
            "attribute": {"max_targets": {"saliency": 2}},
        },
    )
    cfg = load_config(child, ["train.lr=0.5"])
    assert cfg.run.name == "child" and cfg.run.seed == 3  # own key wins, base key kept
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.5  # --set comes last
    assert cfg.train.decoder_channels == (4, 4, 4, 4, 4)  # a list replaces, never appends
    assert cfg.attribute.max_targets == {"integrated_gradients": 8, "saliency": 2}  # maps merge
    assert cfg.labels.negative_buffer_m == 300 and cfg.fetch.datetime == "2023-06-01/2023-06-30"


def test_extends_chain_is_relative_to_each_file(tmp_path: Path) -> None:
    _write(tmp_path, "root.yaml", BASE)
    _write(tmp_path, "mid/mid.yaml", {"extends": "../root.yaml", "train": {"epochs": 9}})
    leaf = _write(
        tmp_path, "mid/leaf/leaf.yaml", {"extends": "../mid.yaml", "run": {"name": "leaf"}}
    )
    cfg = load_config(leaf)
    assert (cfg.run.name, cfg.run.seed, cfg.train.epochs) == ("leaf", 3, 9)
    source = read_config(leaf)
    assert [p.name for p in source.chain] == ["leaf.yaml", "mid.yaml", "root.yaml"]
    assert "extends" not in source.values


@pytest.mark.parametrize("self_loop", [True, False], ids=["itself", "two-files"])
def test_extends_cycle_is_a_config_error_naming_the_files(tmp_path: Path, self_loop: bool) -> None:
    if self_loop:
        start = _write(tmp_path, "a.yaml", {**BASE, "extends": "a.yaml"})
    else:
        start = _write(tmp_path, "a.yaml", {**BASE, "extends": "b.yaml"})
        _write(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match=r"closes a cycle \(.*a\.yaml.*a\.yaml\).*remove one"):
        load_config(start)


def test_missing_base_names_the_file_and_the_fix(tmp_path: Path) -> None:
    child = _write(tmp_path, "child.yaml", {"extends": "nope.yaml", "run": {"name": "c"}})
    with pytest.raises(ConfigError) as err:
        load_config(child)
    message = str(err.value)
    assert str(child) in message and str(tmp_path / "nope.yaml") in message
    assert "relative to the extending file" in message
    bad = _write(tmp_path, "bad.yaml", {"extends": ["a.yaml", "b.yaml"]})
    with pytest.raises(ConfigError, match="must name one base file"):
        load_config(bad)


def test_unknown_key_in_a_base_names_the_key_and_the_chain(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", {**BASE, "train": {"epoch": 3}})
    child = _write(tmp_path, "child.yaml", {"extends": "base.yaml", "run": {"name": "c"}})
    with pytest.raises(ConfigError) as err:
        load_config(child)
    message = str(err.value)
    assert "unknown key 'train.epoch'" in message and "epochs" in message
    assert f"{child} (extends {tmp_path / 'base.yaml'})" in message


def _world_config(tmp_path: Path, **sections: Any) -> Path:
    values: dict[str, Any] = {
        "run": {"name": "w", "data_root": str(tmp_path / "data")},
        "world": {"name": "somewhere"},
        **sections,
    }
    return _write(tmp_path, "world.yaml", values)


def test_world_paths_derive_from_the_world_name(tmp_path: Path) -> None:
    cfg = load_config(_world_config(tmp_path))
    world = WorldPaths(tmp_path / "data", "somewhere")
    assert cfg.labels.osm_file == world.osm
    assert cfg.fetch.catalog == str(world.catalog)
    moved = load_config(_world_config(tmp_path), [f"run.data_root={tmp_path / 'elsewhere'}"])
    assert moved.labels.osm_file == WorldPaths(tmp_path / "elsewhere", "somewhere").osm


def test_explicit_world_paths_are_kept(tmp_path: Path) -> None:
    path = _world_config(
        tmp_path,
        labels={"osm_file": "{data_root}/mine.osm.pbf"},
        fetch={"catalog": "https://example.invalid/v1"},
    )
    cfg = load_config(path)
    assert cfg.labels.osm_file == tmp_path / "data" / "mine.osm.pbf"
    assert cfg.fetch.catalog == "https://example.invalid/v1"
    overpass = load_config(
        _world_config(tmp_path, labels={"source": "overpass", "aoi_bbox": [0, 0, 1, 1]})
    )
    assert overpass.labels.osm_file is None  # only a file source reads the world's extract


def test_without_a_world_labels_still_need_an_extract(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", {"run": {"name": "c"}, "labels": {}, "fetch": {}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "labels.osm_file is not set" in str(err.value) and "fetch.catalog" in str(err.value)


def test_block_size_is_set_once_under_tiles(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", {**BASE, "tiles": {"block_size_m": 2560}})
    cfg = load_config(path)
    assert cfg.labels.block_size_m == cfg.tiles.block_size_m == 2560
    moved = load_config(path, ["tiles.block_size_m=4000"])
    assert moved.labels.block_size_m == moved.tiles.block_size_m == 4000
    free = load_config(path, ["labels.block_size_m=null"])
    assert free.labels.block_size_m is None and free.tiles.block_size_m == 2560
    own = load_config(path, ["labels.block_size_m=1280"])
    assert own.labels.block_size_m == 1280 and own.tiles.block_size_m == 2560
    default = load_config(_write(tmp_path, "d.yaml", BASE))
    assert default.labels.block_size_m == default.tiles.block_size_m == 10_000


def test_bad_tiles_block_size_is_reported_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "c.yaml", {**BASE, "tiles": {"block_size_m": "wide"}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "tiles.block_size_m" in str(err.value) and "labels.block_size_m" not in str(err.value)


SHIPPED = Path("configs")


def _raw_chain(name: str) -> dict[str, Any]:
    return read_config(SHIPPED / name).values


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.glob("*.yaml")))
def test_shipped_configs_state_shared_values_once(name: str) -> None:
    raw = _raw_chain(name)
    assert "block_size_m" not in raw.get("labels", {})  # it follows tiles.block_size_m
    if "world" in raw:
        assert "osm_file" not in raw.get("labels", {}) and "catalog" not in raw.get("fetch", {})
        cfg = load_config(SHIPPED / name)
        assert cfg.world is not None
        world = WorldPaths(cfg.run.data_root, cfg.world.name)
        assert cfg.labels.osm_file == world.osm and cfg.fetch.catalog == str(world.catalog)
        assert cfg.labels.block_size_m == cfg.tiles.block_size_m


def _without(dump: dict[str, Any], keys: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    return {
        section: {k: v for k, v in values.items() if k not in keys.get(section, ())}
        if isinstance(values, dict)
        else values
        for section, values in dump.items()
    }


@pytest.mark.parametrize(
    ("name", "base", "differences"),
    [
        ("demo-clean.yaml", "demo.yaml", {"world": ("name", "snow")}),
        (
            "shortcut.yaml",
            "demo.yaml",
            {
                "world": (
                    "name",
                    "farm_area_ha",
                    "snow_gap_m",
                    "lookalike_layout",
                    "lookalike_swir_shift",
                    "lookalike_gap_m",
                    "snowfree_item",
                    "unmapped_farms",
                    "ghost_labels",
                    "shifted_labels",
                    "history",
                ),
                "train": ("samples_per_epoch",),
                "map": ("windows",),
            },
        ),
        ("shortcut-clean.yaml", "shortcut.yaml", {"world": ("name", "snow")}),
    ],
)
def test_experiment_configs_differ_from_their_base_only_where_they_say(
    name: str, base: str, differences: dict[str, tuple[str, ...]]
) -> None:
    cfg, parent = load_config(SHIPPED / name), load_config(SHIPPED / base)
    keys = {"run": ("name",), "labels": ("osm_file",), "fetch": ("catalog",), **differences}
    assert _without(cfg.model_dump(), keys) == _without(parent.model_dump(), keys)
    for section, fields in differences.items():
        for field in fields:
            assert getattr(getattr(cfg, section), field) != getattr(getattr(parent, section), field)


def test_unknown_encoder_is_refused_with_the_closest_names() -> None:
    with pytest.raises(ConfigError, match=r"train\.encoder = \"resnet19\".*did you mean resnet18"):
        load_config("configs/demo.yaml", ["train.encoder=resnet19"])
    assert load_config("configs/demo.yaml", ["train.encoder=resnext50_32x4d"]).train.encoder
    assert encoder_problem("se_resnet50") is None  # not common: asks the installed library
    assert "timm has no model" in str(encoder_problem("tu-no_such_net"))
