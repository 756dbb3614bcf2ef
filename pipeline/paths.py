"""One root, derived paths: every artefact of a run is named here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """Artefact paths of one run under ``<data_root>/runs/<run>/``.

    Stage folders are ``<root>/<stage>/``; each ends with ``manifest.json``. Per-patch files
    are keyed by ``patch_id`` (a string safe for file names).
    """

    data_root: Path
    run: str

    @property
    def root(self) -> Path:
        return self.data_root / "runs" / self.run

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest(self, stage: str) -> Path:
        return self.stage_dir(stage) / "manifest.json"

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder (how manifests list outputs)."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    # labels ------------------------------------------------------------------------------
    @property
    def farms(self) -> Path:
        """GeoPackage of accepted farms (EPSG:4326; farm_id, osm_id, tags, area_m2, source)."""
        return self.stage_dir("labels") / "farms.gpkg"

    @property
    def rejected(self) -> Path:
        """GeoPackage of rejected OSM features with a ``reason`` column."""
        return self.stage_dir("labels") / "rejected.gpkg"

    @property
    def plan(self) -> Path:
        """GeoPackage of planned patches (EPSG:4326; patch_id, epsg, x0, y0, size, gsd, kind)."""
        return self.stage_dir("labels") / "plan.gpkg"

    # fetch -------------------------------------------------------------------------------
    def image(self, patch_id: str) -> Path:
        """10-band uint16 COG of one patch (reflectance x 10000)."""
        return self.stage_dir("fetch") / "patches" / f"{patch_id}.tif"

    def scl(self, patch_id: str) -> Path:
        """Scene-classification (SCL) uint8 COG of one patch on the same grid."""
        return self.stage_dir("fetch") / "patches" / f"{patch_id}_scl.tif"

    @property
    def fetch_index(self) -> Path:
        """GeoPackage: one row per planned patch (patch_id, status, item_id, clear share)."""
        return self.stage_dir("fetch") / "index.gpkg"

    # tiles -------------------------------------------------------------------------------
    def mask(self, patch_id: str) -> Path:
        """uint8 label mask (1 = farm) on the patch grid."""
        return self.stage_dir("tiles") / "masks" / f"{patch_id}.tif"

    @property
    def tiles_index(self) -> Path:
        """GeoPackage: patch_id, split, image, mask, scl (paths relative to run), coverage."""
        return self.stage_dir("tiles") / "index.gpkg"

    @property
    def band_stats(self) -> Path:
        """JSON: per-band mean/std over the training split (in reflectance x 10000)."""
        return self.stage_dir("tiles") / "band_stats.json"

    # train -------------------------------------------------------------------------------
    @property
    def model(self) -> Path:
        """The exported model (weights + metadata), loadable with ``weights_only=True``."""
        return self.stage_dir("train") / "model.pt"

    @property
    def checkpoints(self) -> Path:
        return self.stage_dir("train") / "checkpoints"

    # predict -----------------------------------------------------------------------------
    def probability(self, patch_id: str) -> Path:
        return self.stage_dir("predict") / "prob" / f"{patch_id}.tif"

    def predicted_mask(self, patch_id: str) -> Path:
        return self.stage_dir("predict") / "mask" / f"{patch_id}.tif"

    @property
    def predicted_farms(self) -> Path:
        return self.stage_dir("predict") / "farms.gpkg"

    @property
    def metrics(self) -> Path:
        return self.stage_dir("predict") / "metrics.json"

    # attribute ---------------------------------------------------------------------------
    def attribution(self, patch_id: str, method: str, target: str) -> Path:
        return self.stage_dir("attribute") / method / target / f"{patch_id}.tif"

    @property
    def attribution_index(self) -> Path:
        """CSV: one row per attribution raster (patch_id, method, target, path, gap, ...)."""
        return self.stage_dir("attribute") / "index.csv"

    # audit / report ----------------------------------------------------------------------
    @property
    def reliance(self) -> Path:
        return self.stage_dir("audit") / "reliance.csv"

    @property
    def report(self) -> Path:
        return self.stage_dir("report") / "index.html"


def world_dir(data_root: Path, name: str) -> Path:
    """Folder of a demo world: ``catalog.json``, ``world.osm``, ``truth/``."""
    return data_root / "worlds" / name
