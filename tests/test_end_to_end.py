"""One end-to-end run of every stage on a reduced demo world, through the CLI.

The world is a 640 x 640 px (6.4 km) crop of the real scene with a handful of planted farms; the
model is tiny and trains for a few steps. The test checks that every stage leaves a manifest
whose outputs exist, that rasters stay on their patch grids, that a second run re-runs nothing,
and that the walkthrough notebook executes against the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pystac
import pytest
import rasterio

from pipeline.bands import BANDS
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.demo import load_truth
from pipeline.geo.styles import style_path
from pipeline.manifest import Manifest
from pipeline.paths import RunPaths, WorldPaths
from pipeline.stages import STAGES, is_current

pytestmark = pytest.mark.slow

OVERRIDES = [
    "world.crop=[0, 700, 640, 640]",
    "world.n_farms=6",
    "world.farm_area_ha=[3, 30]",
    "world.ghost_labels=0",  # the removed farm is still one OSM farm with nothing standing
    "tiles.split_fractions=[0.5, 0.25, 0.25]",
    "train.encoder_depth=3",
    "train.decoder_channels=[32, 16, 8]",
    "train.epochs=2",
    "train.samples_per_epoch=16",
    "train.batch_size=4",
    "train.crop_size=64",
    "attribute.methods=[saliency, integrated_gradients]",
    "attribute.targets=[predicted_mask, label_farms]",
    "attribute.ig_steps=8",
    "attribute.max_patches=3",
    "audit.sanity_patches=1",
    "audit.faithfulness_patches=1",
    "audit.data_randomization_steps=2",
    "audit.bootstrap=50",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], RunPaths]:
    root = tmp_path_factory.mktemp("e2e")
    args = [*(f for o in OVERRIDES for f in ("--set", o)), "--set", f"run.data_root={root}"]
    code = main(["all", "--config", "configs/demo.yaml", *args])
    assert code == 0
    return args, RunPaths(root, "demo")


def test_every_stage_leaves_a_manifest_whose_outputs_exist(run) -> None:
    _, paths = run
    for name in STAGES:
        manifest = Manifest.read(paths.manifest(name))
        assert manifest.stage == name
        assert len(manifest.config_digest) == 64
        assert manifest.outputs, f"{name} lists no outputs"
        for rel in manifest.outputs:
            assert (paths.root / rel).exists(), f"{name}: {rel} missing"
        assert manifest.versions["torch"] != "absent"
    assert set(Manifest.read(paths.manifest("predict")).inputs) == {"tiles", "train"}


def test_labels_match_the_planted_farms(run) -> None:
    _, paths = run
    farms = gpd.read_file(paths.farms)
    truth = load_truth(WorldPaths(paths.data_root, "demo").root)
    mapped = set(truth.farms.loc[truth.farms["in_osm"], "farm_id"])
    assert set(farms["farm_id"]) == mapped | set(truth.ghosts["farm_id"])  # OSM's errors too
    assert (paths.root / "fetch").is_dir() and len(gpd.read_file(paths.fetch_index)) > 0


def test_rasters_stay_on_the_patch_grid(run) -> None:
    _, paths = run
    tiles = gpd.read_file(paths.tiles_index)
    attributions = pd.read_csv(paths.attribution_index)
    done = attributions[attributions["status"] == "ok"]
    assert len(done) > 0
    row = done.iloc[0]
    with rasterio.open(paths.image(row["patch_id"])) as image:
        assert image.descriptions == BANDS
        for path in (
            paths.mask(row["patch_id"]),
            paths.probability(row["patch_id"]),
            paths.root / row["path"],
        ):
            with rasterio.open(path) as other:
                assert (other.crs, other.transform, other.shape) == (
                    image.crs,
                    image.transform,
                    image.shape,
                ), path
    with rasterio.open(paths.root / row["path"]) as attribution:
        assert attribution.descriptions == (*BANDS, "aggregate")
        assert attribution.tags()["method"] == row["method"]
    assert set(tiles["split"]) <= {"train", "val", "test"}


def test_outputs_open_styled_in_qgis_and_are_catalogued(run) -> None:
    _, paths = run
    pid = pd.read_csv(paths.attribution_index).query("status == 'ok'").iloc[0]["patch_id"]
    rasters = [paths.image(pid), paths.scl(pid), paths.mask(pid), paths.probability(pid)]
    rasters.append(paths.predicted_mask(pid))
    for raster in rasters:
        assert style_path(raster).is_file(), raster
    epsg = rasterio.open(paths.image(pid)).crs.to_epsg()
    for vrt in (paths.patches_vrt(epsg), paths.probability_vrt(epsg), paths.masks_vrt(epsg)):
        with rasterio.open(vrt) as mosaic:
            assert mosaic.crs.to_epsg() == epsg and style_path(vrt).is_file()
    farms = gpd.read_file(paths.flags_gpkg)
    assert farms.groupby(["target", "target_id"]).size().max() == 1  # one row per farm
    catalog = pystac.Catalog.from_file(str(paths.catalog))
    item = next(catalog.get_child("patches").get_items())
    sources = [link.get_absolute_href() for link in item.get_links("derived_from")]
    assert sources and all(Path(s).is_file() for s in sources)  # the world's Sentinel-2 items
    assert json.loads(Path(sources[0]).read_text())["id"] in item.properties["sentinel2:items"]


def test_report_is_written(run) -> None:
    _, paths = run
    html = paths.report.read_text()
    assert "<html" in html.lower() and "snow" in html.lower()
    assert "http://" not in html and "https://" not in html.replace("https://www.w3.org", "")


def test_second_run_reruns_nothing(run) -> None:
    args, paths = run
    before = {name: paths.manifest(name).read_bytes() for name in STAGES}
    assert main(["all", "--config", "configs/demo.yaml", *args]) == 0
    cfg = load_config("configs/demo.yaml", args[1::2])
    for name in STAGES:
        assert paths.manifest(name).read_bytes() == before[name], name
        assert is_current(name, cfg, paths)


def test_walkthrough_notebook_executes(run) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _, paths = run
    nb = nbformat.read("notebooks/walkthrough.ipynb", as_version=4)
    env = {"PIPELINE_DATA_ROOT": str(paths.data_root), "PIPELINE_RUN": paths.run}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(Path.cwd())}},
        ).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the notebook displayed no quicklook"
