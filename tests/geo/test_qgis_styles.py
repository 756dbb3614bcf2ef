"""The styles beside the run's files, loaded in real QGIS (skipped where QGIS is not installed).

QGIS's Python bindings come with QGIS (Debian: ``apt-get install python3-qgis qgis-providers``)
and live in the system Python, not in the project's virtual environment, so the layers are
loaded by ``qgis_probe.py`` in that interpreter (``QGIS_PYTHON``, default /usr/bin/python3).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import box

from pipeline.audit.flags import farm_table, write_flags_gpkg
from pipeline.bands import BANDS
from pipeline.geo.raster import Grid, write_cog
from pipeline.geo.styles import (
    MASK_ENCODING,
    MASK_NODATA,
    PATCH_ENCODING,
    SCL_ENCODING,
    attribution_style,
    mask_style,
    patch_file_style,
    patch_style,
    probability_style,
    ramp_limit,
    scl_style,
    write_style,
)
from pipeline.geo.vrt import zone_vrts

QGIS_PYTHON = os.environ.get("QGIS_PYTHON", "/usr/bin/python3")
PROBE = Path(__file__).parents[1] / "support" / "qgis_probe.py"


def _qgis() -> None:
    try:
        found = subprocess.run(
            [QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, timeout=60
        ).returncode
    except (OSError, subprocess.TimeoutExpired):
        found = 1
    if found != 0:
        pytest.skip(
            f"QGIS's Python bindings are not importable by {QGIS_PYTHON} (apt-get install "
            "python3-qgis qgis-providers, or set QGIS_PYTHON)"
        )


def _probe(files: list[Path]) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": "/tmp"}
    done = subprocess.run(
        [QGIS_PYTHON, str(PROBE), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _grid(x0: float) -> Grid:
    return Grid(CRS.from_epsg(32618), Affine(10, 0, x0, 0, -10, 4_170_000), 64, 64)


def _run_files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    image = rng.integers(200, 3000, (len(BANDS), 64, 64)).astype(np.uint16)
    files = {}
    for i in range(2):
        patch = write_cog(
            folder / f"p{i}.tif",
            image,
            _grid(i * 640),
            band_names=BANDS,
            nodata=0,
            encoding=PATCH_ENCODING,
        )
        write_style(patch, patch_style(image, BANDS))
        files[f"patch{i}"] = patch
    scl = write_cog(
        folder / "p0_scl.tif",
        np.full((1, 64, 64), 11, np.uint8),
        _grid(0),
        band_names=["SCL"],
        nodata=0,
        encoding=SCL_ENCODING,
    )
    write_style(scl, scl_style())
    mask = write_cog(
        folder / "mask.tif",
        np.ones((1, 64, 64), np.uint8),
        _grid(0),
        band_names=["farm"],
        nodata=MASK_NODATA,
        encoding=MASK_ENCODING,
    )
    write_style(mask, mask_style("farm (label)"))
    prob = write_cog(
        folder / "prob.tif",
        rng.random((1, 64, 64)).astype(np.float32),
        _grid(0),
        band_names=["probability"],
        nodata=float("nan"),
    )
    write_style(prob, probability_style())
    values = rng.normal(size=(len(BANDS) + 1, 64, 64)).astype(np.float32)
    attribution = write_cog(
        folder / "ig.tif", values, _grid(0), band_names=[*BANDS, "aggregate"], nodata=float("nan")
    )
    write_style(attribution, attribution_style(values[-1], signed=True, band=11))
    vrts = zone_vrts(
        [files["patch0"], files["patch1"]], lambda e: folder / f"patches_{e}.vrt", patch_file_style
    )
    rows = {
        "target": "label_farms",
        "target_id": "w1",
        "cue": "snow",
        "verdict": "confirmed",
        "method": "integrated_gradients",
        "enrichment": 40.0,
        "effect": 0.2,
        "patch_ids": '["p0"]',
    }
    polygons = {("label_farms", "w1"): box(-75, 37, -74.99, 37.01)}
    gpkg = write_flags_gpkg(folder / "flags.gpkg", farm_table(pd.DataFrame([rows])), polygons)
    return {
        **files,
        "scl": scl,
        "mask": mask,
        "prob": prob,
        "ig": attribution,
        "vrt": vrts[0],
        "flags": gpkg,
    }


def test_qgis_opens_every_file_with_its_style(tmp_path: Path) -> None:
    _qgis()
    files = _run_files(tmp_path)
    with rasterio.open(files["ig"]) as src:
        limit = ramp_limit(src.read(11))
    got = _probe(list(files.values()))
    layer = {name: got[str(path)] for name, path in files.items()}
    assert all(v["valid"] for v in layer.values()), layer
    patch = layer["patch0"]
    assert patch["renderer"] == "multibandcolor" and patch["bands"] == [3, 2, 1]
    assert patch["scale"] == pytest.approx(1e-4)  # QGIS shows reflectance
    assert 0 < patch["red_range"][0] < patch["red_range"][1] < 0.31  # stretch in reflectance
    vrt = layer["vrt"]
    assert vrt["renderer"] == "multibandcolor" and vrt["bands"] == [3, 2, 1]
    assert vrt["scale"] == pytest.approx(1e-4)
    assert layer["scl"]["renderer"] == "paletted" and layer["scl"]["classes"]["11"] == "snow"
    assert layer["mask"]["classes"] == {"0": "not farm", "1": "farm (label)"}
    assert layer["prob"] == {**layer["prob"], "renderer": "singlebandpseudocolor", "range": [0, 1]}
    ig = layer["ig"]
    assert ig["renderer"] == "singlebandpseudocolor" and ig["band"] == 11
    assert ig["range"] == pytest.approx([-limit, limit], rel=1e-4)
    flags = layer["flags"]
    assert flags["renderer"] == "categorizedSymbol" and flags["field"] == "verdict"
    assert "confirmed" in flags["categories"] and flags["features"] == 1
