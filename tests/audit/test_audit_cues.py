"""Cue masks on known pixels: NDSI/NDWI values, SCL snow, missing bands recorded as such."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.audit.cues import compute_cues, ndsi, ndwi, snow_mask, water_mask
from pipeline.bands import BANDS
from pipeline.config import load_config
from pipeline.config.audit import AuditConfig
from pipeline.errors import ConfigError


def _image(pixels: dict[str, list[int]]) -> np.ndarray:
    """(10, 1, n) stored DN; unspecified bands 1000."""
    n = len(next(iter(pixels.values())))
    img = np.full((len(BANDS), 1, n), 1000, np.uint16)
    for band, values in pixels.items():
        img[BANDS.index(band), 0] = values
    return img


def test_ndsi_and_ndwi_of_known_pixels() -> None:
    # snow: green 0.80, swir 0.10 -> (0.8 - 0.1) / 0.9
    assert ndsi(np.array([8000]), np.array([1000]))[0] == pytest.approx(0.7 / 0.9)
    assert ndwi(np.array([600]), np.array([200]))[0] == pytest.approx(0.5)
    assert np.isnan(ndsi(np.array([0]), np.array([0]))[0])  # nodata, not 0


def test_snow_by_ndsi_needs_brightness() -> None:
    cfg = AuditConfig()
    img = _image({"B03": [8000, 800, 8000], "B11": [1000, 100, 1000], "B08": [7000, 7000, 500]})
    cue = snow_mask(img, BANDS, None, cfg)
    # bright snow; dark pixel with high NDSI (0.78) but B03 0.08 < 0.10; low NIR (0.05 < 0.11)
    assert cue.source == "ndsi" and cue.mask.tolist() == [[True, False, False]]


def test_snow_prefers_scl_class_11() -> None:
    img = _image({"B03": [8000, 8000], "B11": [1000, 1000], "B08": [7000, 7000]})
    scl = np.array([[11, 4]], np.uint8)
    cue = snow_mask(img, BANDS, scl, AuditConfig())
    assert cue.source == "scl" and cue.mask.tolist() == [[True, False]]


def test_missing_band_is_not_computable_with_reason() -> None:
    bands = ("B02", "B03", "B04")
    img = np.full((3, 4, 4), 1000, np.uint16)
    cues = compute_cues(img, bands, None, AuditConfig())
    assert not cues["snow"].computable and "B08, B11" in cues["snow"].reason
    assert not cues["water"].computable and "B08" in cues["water"].reason
    assert np.isnan(cues["snow"].share())  # never 0: "not computable" is not "no snow"
    # with SCL, snow and cloud need no band at all
    with_scl = compute_cues(img, bands, np.full((4, 4), 11, np.uint8), AuditConfig())
    assert with_scl["snow"].share() == 1.0 and with_scl["cloud"].share() == 0.0


def test_water_and_analyst_cues() -> None:
    img = _image({"B03": [900, 900], "B08": [300, 3000]})
    assert water_mask(img, BANDS, AuditConfig()).mask.tolist() == [[True, False]]
    cues = compute_cues(
        img,
        BANDS,
        None,
        AuditConfig(cues=()),
        {"quarry": np.array([[0, 1]]), "lake": "file has no CRS"},
    )
    assert cues["quarry"].mask.tolist() == [[False, True]]
    assert not cues["lake"].computable and cues["lake"].reason == "file has no CRS"


def test_thresholds_out_of_range_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"audit.ndsi_threshold = 1.5"):
        load_config("configs/demo.yaml", ["audit.ndsi_threshold=1.5"])
    with pytest.raises(ConfigError, match=r"audit.min_effect = -0.1"):
        load_config("configs/demo.yaml", ["audit.min_effect=-0.1"])
    with pytest.raises(ConfigError, match="shadows a built-in cue"):
        load_config("configs/demo.yaml", ["audit.cue_files={snow: x.gpkg}"])
