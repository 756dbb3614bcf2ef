"""Per-patch work as a function of (patch spec, candidate items, settings): no files written.

:func:`fetch_patch` screens every candidate scene on the patch's SCL window, picks one, reads
the ten bands of its items into the patch grid, harmonizes them and mosaics them. Band reads go
through an injected ``submit`` (a thread pool's) so reads of one patch overlap; with a plain
call it runs serially, which is what a Dask task would do.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pystac
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from shapely.geometry.base import BaseGeometry

from pipeline.bands import BANDS, NATIVE_GSD
from pipeline.geo.raster import Grid
from pipeline.net import RetryPolicy
from pipeline.stac.assets import Signer, band_hrefs
from pipeline.stac.radiometry import apply_offset, double_correction_share, harmonization_for
from pipeline.stac.read import read_band
from pipeline.stac.scene import (
    SceneScreen,
    choose_scene,
    group_scenes,
    other_scenes,
    screen_scene,
)

log = logging.getLogger(__name__)

Submit = Callable[..., "Future[np.ndarray]"]

#: Written into every patch image's tags.
DTYPE_NOTE = (
    "uint16 surface reflectance x 10000 (harmonized); 0 = nodata; valid pixels >= 1 "
    "(reflectance <= 0 is clipped to 1)"
)


@dataclass(frozen=True)
class PatchSpec:
    """One planned patch (a row of ``plan.gpkg``).

    Attributes:
        patch_id: ``p00000``-style id.
        epsg: UTM EPSG code of the patch grid.
        x0: Upper-left x in metres (EPSG:epsg).
        y0: Upper-left y in metres.
        size: Side in pixels.
        gsd: Pixel size in metres.
        footprint: Footprint polygon in EPSG:4326.
    """

    patch_id: str
    epsg: int
    x0: float
    y0: float
    size: int
    gsd: float
    footprint: BaseGeometry

    @property
    def grid(self) -> Grid:
        transform = Affine(self.gsd, 0.0, self.x0, 0.0, -self.gsd, self.y0)
        return Grid(CRS.from_epsg(self.epsg), transform, self.size, self.size)

    def digest(self, settings: Mapping[str, Any]) -> str:
        """SHA-256 of this plan row and the output-relevant fetch settings."""
        payload = {
            "patch": [self.patch_id, self.epsg, self.x0, self.y0, self.size, self.gsd],
            "settings": dict(settings),
            "bands": list(BANDS),
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class ReadSettings:
    """How a patch is screened and read.

    Attributes:
        min_clear: Minimum clear fraction of the chosen scene.
        target_date: Tie-break date (None: most recent).
        clear_tie: Width of a clear-fraction tie bucket.
        double_correction_warn: Warn above this share (see :mod:`pipeline.stac.radiometry`).
        policy: Retries of each read.
        gdal: GDAL option overrides for each read.
        alternates: Other acquisitions of the patch to read too (``fetch.alternates``).
    """

    min_clear: float
    target_date: date | None
    clear_tie: float
    double_correction_warn: float
    policy: RetryPolicy
    gdal: Mapping[str, str | int] = field(default_factory=dict)
    alternates: int = 0


@dataclass(frozen=True)
class AlternateScene:
    """Another acquisition of the patch, read like the chosen one.

    Attributes:
        image: ``(10, H, W)`` uint16 harmonized reflectance x 10000.
        scl: ``(H, W)`` uint8 SCL.
        tags: Its tags (item id, datetime, clear and snow shares, harmonization).
    """

    image: np.ndarray
    scl: np.ndarray
    tags: dict[str, str]


@dataclass
class PatchResult:
    """What :func:`fetch_patch` found for one patch.

    Attributes:
        status: ``ok`` or ``skipped``.
        reason: Why skipped, or how the scene was chosen.
        image: ``(10, H, W)`` uint16 harmonized reflectance x 10000, or None.
        scl: ``(H, W)`` uint8 SCL, or None.
        tags: Image tags (item id, datetime, fractions, harmonization...).
        warnings: Things a person should look at (double correction).
        alternates: The patch's other acquisitions (``ReadSettings.alternates``), clearest
            first.
    """

    status: str
    reason: str
    image: np.ndarray | None = None
    scl: np.ndarray | None = None
    tags: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    alternates: list[AlternateScene] = field(default_factory=list)


def _serial(fn: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> Future[np.ndarray]:
    fut: Future[np.ndarray] = Future()
    try:
        fut.set_result(fn(*args, **kwargs))
    except Exception as err:
        fut.set_exception(err)
    return fut


def _resampling(band: str) -> Resampling:
    return Resampling.nearest if band == "SCL" else Resampling.bilinear


def _read_many(
    jobs: Sequence[tuple[str, str, str]], grid: Grid, settings: ReadSettings, submit: Submit
) -> list[np.ndarray]:
    """Read ``(band, href, label)`` jobs concurrently; results in job order."""
    futures = [
        submit(
            read_band,
            href,
            grid,
            resampling=_resampling(band),
            dtype="uint8" if band == "SCL" else "uint16",
            policy=settings.policy,
            options=settings.gdal,
            what=f"read {band} of {label}",
        )
        for band, href, label in jobs
    ]
    return [f.result() for f in futures]


def screen_candidates(
    items: Sequence[pystac.Item],
    grid: Grid,
    settings: ReadSettings,
    signer: Signer,
    submit: Submit = _serial,
) -> list[SceneScreen]:
    """Read every candidate item's SCL on ``grid`` and screen each scene."""
    scenes = group_scenes(items)
    flat = [item for scene in scenes for item in scene]
    jobs = [("SCL", band_hrefs(item, ("SCL",), signer)["SCL"], item.id) for item in flat]
    scls = iter(_read_many(jobs, grid, settings, submit))
    return [screen_scene(scene, [next(scls) for _ in scene]) for scene in scenes]


def read_scene(
    screen: SceneScreen,
    grid: Grid,
    settings: ReadSettings,
    signer: Signer,
    submit: Submit = _serial,
) -> tuple[np.ndarray, list[str], float]:
    """Read, harmonize and mosaic the ten bands of a chosen scene.

    Returns:
        ``(image (10, H, W) uint16, harmonization rules per item, double-correction share)``.
    """
    jobs = [
        (band, href, item.id)
        for item in screen.items
        for band, href in band_hrefs(item, BANDS, signer).items()
    ]
    arrays = iter(_read_many(jobs, grid, settings, submit))
    layers, rules, shares = [], [], []
    for item in screen.items:
        rule = harmonization_for(item)
        raw = np.stack([next(arrays) for _ in BANDS])
        shares.append(double_correction_share(raw[:3], screen.scl, rule.offset_dn))
        layers.append(apply_offset(raw, rule.offset_dn))
        rules.append(rule.rule)
    image = layers[0].copy()
    for layer in layers[1:]:
        hole = np.all(image == 0, axis=0)
        image[:, hole] = layer[:, hole]
    return image, rules, max(shares)


def _tags(screen: SceneScreen, rules: list[str], share: float) -> dict[str, str]:
    primary = screen.items[0]
    props = primary.properties
    return {
        "item_id": primary.id,
        "datetime": screen.when.isoformat().replace("+00:00", "Z"),
        "platform": str(props.get("platform", "")),
        "collection": str(primary.collection_id or ""),
        "processing_baseline": harmonization_for(primary).baseline,
        "harmonization": ";".join(dict.fromkeys(rules)),
        "clear_fraction": f"{screen.clear_fraction:.4f}",
        "snow_fraction": f"{screen.snow_fraction:.4f}",
        "stac_item_ids": json.dumps(screen.item_ids),
        "double_correction_share": f"{share:.4f}",
        "scale": "0.0001",
        "dtype": DTYPE_NOTE,
        "native_gsd": json.dumps({b: NATIVE_GSD[b] for b in BANDS}),
    }


def fetch_patch(
    spec: PatchSpec,
    items: Sequence[pystac.Item],
    settings: ReadSettings,
    signer: Signer,
    submit: Submit = _serial,
) -> PatchResult:
    """Screen ``items`` on ``spec``'s grid, choose a scene and read it.

    Raises:
        rasterio.errors.RasterioIOError: a read still fails after the retries.
        FetchError: an item lacks a band or a processing baseline.
    """
    grid = spec.grid
    screens = screen_candidates(items, grid, settings, signer, submit)
    best, reason = choose_scene(
        screens,
        min_clear=settings.min_clear,
        target=settings.target_date,
        tie=settings.clear_tie,
    )
    if best is None:
        return PatchResult("skipped", reason)
    image, rules, share = read_scene(best, grid, settings, signer, submit)
    warnings = []
    if share > settings.double_correction_warn:
        msg = (
            f"{spec.patch_id}: {share:.0%} of vegetation pixels have blue/green/red <= 0 after "
            f"subtracting the offset ({';'.join(rules)}): the data look double-corrected. Check "
            "the catalog's earthsearch:boa_offset_applied / processing baseline"
        )
        log.warning(msg)
        warnings.append(msg)
    alternates = [
        read_alternate(other, grid, settings, signer, submit)
        for other in other_scenes(screens, best, settings.alternates)
    ]
    tags = _tags(best, rules, share)
    return PatchResult("ok", reason, image, best.scl, tags, warnings, alternates)


def read_alternate(
    screen: SceneScreen, grid: Grid, settings: ReadSettings, signer: Signer, submit: Submit
) -> AlternateScene:
    """Read another acquisition of the patch (:func:`read_scene`) with its SCL and tags."""
    image, rules, share = read_scene(screen, grid, settings, signer, submit)
    return AlternateScene(image, screen.scl, _tags(screen, rules, share))
