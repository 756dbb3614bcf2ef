"""The run's outputs as a STAC catalog, read back with pystac (on the miniature run)."""

from __future__ import annotations

from pathlib import Path

import pystac

from pipeline.bands import BANDS
from pipeline.io import sha256_file
from pipeline.stac.run_catalog import write_run_catalog


def test_run_catalog_describes_patches_predictions_attributions_and_the_model(reported) -> None:
    cfg, paths = reported
    assert write_run_catalog(cfg, paths) == paths.catalog
    catalog = pystac.Catalog.from_file(str(paths.catalog))
    children = {c.id: c for c in catalog.get_children()}
    assert set(children) == {"patches", "predictions", "attributions", "model"}
    patches = {i.id: i for i in children["patches"].get_items()}
    assert set(patches) == {"p0", "p1"}
    image = patches["p0"].assets["image"]
    assert image.get_absolute_href() == str(paths.image("p0").resolve())
    assert [b["name"] for b in image.extra_fields["eo:bands"]] == list(BANDS)
    assert patches["p0"].assets["mask"].get_absolute_href() == str(paths.mask("p0").resolve())
    model = next(children["model"].get_items())
    assert model.properties["solarfarm:sha256"] == sha256_file(paths.model)
    assert model.properties["solarfarm:bands"] == list(BANDS)
    attributions = {i.id: i for i in children["attributions"].get_items()}
    keys = set(attributions["p0"].assets)
    assert {"saliency.label_farms.w1", "integrated_gradients.predicted_mask"} <= keys
    derived = [link.get_absolute_href() for link in attributions["p0"].get_links("derived_from")]
    assert derived == [
        str((paths.catalog_dir / "patches" / "p0.json").resolve()),
        str((paths.catalog_dir / "model" / "model.json").resolve()),
    ]
    for item in catalog.get_items(recursive=True):  # every asset is a file of the run
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_file()
