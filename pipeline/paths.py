"""One root, derived paths: every artefact of a run is named here and nowhere else.

:class:`RunPaths` names what the stages of one run write under ``<data_root>/runs/<run>/``;
:class:`WorldPaths` names the files of a demo world under ``<data_root>/worlds/<name>/``.
Stages, the report, notebooks and tests ask these objects for a path; none joins one itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


def safe_name(text: str) -> str:
    """``text`` with every character but ``A-Z a-z 0-9 _ . -`` replaced by ``_`` (never empty)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


@dataclass(frozen=True)
class PatchFiles:
    """The files of one patch the attribute and audit stages read.

    Attributes:
        image: 10-band uint16 patch COG.
        scl: Its SCL on the same grid.
        labels: Label mask (1 = farm) on the same grid.
        probability: Model probability on the same grid.
        predicted_mask: Predicted mask; ``None`` for a mapped farm's patch (its predicted
            farms are the mapped farm polygons).
        mapped: The patch was cut around a mapped farm by the map stage.
    """

    image: Path
    scl: Path
    labels: Path
    probability: Path
    predicted_mask: Path | None
    mapped: bool = False


@dataclass(frozen=True)
class RunPaths:
    """Artefact paths of one run under ``<data_root>/runs/<run>/``.

    Stage folders are ``<root>/<stage>/``; each ends with ``manifest.json``. Per-patch files
    are keyed by ``patch_id`` (a string safe for file names). ``map_window`` names an
    earlier date window of a map over time (:meth:`for_map_window`): its ``map_*`` files lie
    under ``map/windows/<name>/``; ``""`` (the run's own paths) is the latest window.
    """

    data_root: Path
    run: str
    map_window: str = ""

    @property
    def root(self) -> Path:
        return self.data_root / "runs" / self.run

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def manifest(self, stage: str) -> Path:
        return self.stage_dir(stage) / "manifest.json"

    def stage_config(self, stage: str) -> Path:
        """The resolved config sections a stage ran with (``<stage>/config.json``)."""
        return self.stage_dir(stage) / "config.json"

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder (how manifests list outputs)."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def resolve(self, relative: str) -> Path:
        """The file a run-relative path of an index table names (inverse of :meth:`relative`)."""
        return self.root / relative

    @property
    def catalog(self) -> Path:
        """The run's STAC catalog (beside the stage folders and their manifests)."""
        return self.root / "catalog.json"

    @property
    def catalog_dir(self) -> Path:
        """Folder of the run catalog's collections and items."""
        return self.root / "stac"

    @property
    def overpass_cache(self) -> Path:
        """Overpass responses keyed by the query's SHA-256, shared by every run of the root."""
        return self.data_root / "cache" / "overpass"

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

    @property
    def aoi(self) -> Path:
        """GeoPackage of the labels' area of interest (one polygon, EPSG:4326, layer ``aoi``)."""
        return self.stage_dir("labels") / "aoi.gpkg"

    # fetch -------------------------------------------------------------------------------
    @property
    def patches_dir(self) -> Path:
        """Folder of the fetched patch COGs."""
        return self.stage_dir("fetch") / "patches"

    def image(self, patch_id: str) -> Path:
        """10-band uint16 COG of one patch (reflectance x 10000)."""
        return self.patches_dir / f"{patch_id}.tif"

    def scl(self, patch_id: str) -> Path:
        """Scene-classification (SCL) uint8 COG of one patch on the same grid."""
        return self.patches_dir / f"{patch_id}_scl.tif"

    def patches_vrt(self, epsg: int) -> Path:
        """Mosaic (VRT) of the patches of one UTM zone."""
        return self.stage_dir("fetch") / f"patches_{epsg}.vrt"

    def scl_vrt(self, epsg: int) -> Path:
        """Mosaic (VRT) of the SCL rasters of one UTM zone."""
        return self.stage_dir("fetch") / f"scl_{epsg}.vrt"

    @property
    def alternates_dir(self) -> Path:
        """Folder of the patches' other acquisitions in the window (``fetch.alternates``)."""
        return self.stage_dir("fetch") / "alternates"

    def alternate_image(self, patch_id: str, rank: int) -> Path:
        """10-band COG of a patch's ``rank``-th other acquisition (1 = clearest), same grid."""
        return self.alternates_dir / f"{patch_id}_alt{rank}.tif"

    def alternate_scl(self, patch_id: str, rank: int) -> Path:
        """SCL COG of that acquisition on the same grid."""
        return self.alternates_dir / f"{patch_id}_alt{rank}_scl.tif"

    def alternates_list(self, patch_id: str) -> Path:
        """JSON: the patch's other acquisitions (rank, item id, datetime, clear and snow shares,
        image and SCL paths relative to the run folder) and the digest they were written with."""
        return self.alternates_dir / f"{patch_id}.json"

    @property
    def fetch_index(self) -> Path:
        """GeoPackage: one row per planned patch (patch_id, status, item_id, clear share)."""
        return self.stage_dir("fetch") / "index.gpkg"

    @property
    def fetch_summary(self) -> Path:
        """JSON: counts, skip reasons, failures and warnings of the fetch stage."""
        return self.stage_dir("fetch") / "summary.json"

    # tiles -------------------------------------------------------------------------------
    @property
    def masks_dir(self) -> Path:
        """Folder of the label masks."""
        return self.stage_dir("tiles") / "masks"

    def mask(self, patch_id: str) -> Path:
        """uint8 label mask (1 = farm) on the patch grid."""
        return self.masks_dir / f"{patch_id}.tif"

    def masks_vrt(self, epsg: int) -> Path:
        """Mosaic (VRT) of the label masks of one UTM zone."""
        return self.stage_dir("tiles") / f"masks_{epsg}.vrt"

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

    @property
    def train_logs(self) -> Path:
        """Folder of the CSV and TensorBoard logs."""
        return self.stage_dir("train") / "logs"

    @property
    def train_metrics(self) -> Path:
        """Lightning's CSV log of the fit (one row per logging step)."""
        return self.train_logs / "csv" / "version_0" / "metrics.csv"

    # predict -----------------------------------------------------------------------------
    @property
    def probability_dir(self) -> Path:
        return self.stage_dir("predict") / "prob"

    @property
    def predicted_mask_dir(self) -> Path:
        return self.stage_dir("predict") / "mask"

    def probability(self, patch_id: str) -> Path:
        return self.probability_dir / f"{patch_id}.tif"

    def predicted_mask(self, patch_id: str) -> Path:
        return self.predicted_mask_dir / f"{patch_id}.tif"

    def probability_vrt(self, epsg: int) -> Path:
        """Mosaic (VRT) of the probability rasters of one UTM zone."""
        return self.stage_dir("predict") / f"prob_{epsg}.vrt"

    def predicted_mask_vrt(self, epsg: int) -> Path:
        """Mosaic (VRT) of the predicted masks of one UTM zone."""
        return self.stage_dir("predict") / f"mask_{epsg}.vrt"

    @property
    def predicted_farms(self) -> Path:
        return self.stage_dir("predict") / "farms.gpkg"

    @property
    def false_positives(self) -> Path:
        """GeoPackage: predicted polygons that match no label (layer ``false_positives``)."""
        return self.stage_dir("predict") / "false_positives.gpkg"

    @property
    def missed_farms(self) -> Path:
        """GeoPackage: label farms no prediction matched (layer ``missed``)."""
        return self.stage_dir("predict") / "missed.gpkg"

    @property
    def metrics(self) -> Path:
        return self.stage_dir("predict") / "metrics.json"

    @property
    def metrics_plot(self) -> Path:
        """PNG: threshold sweeps and the chosen threshold."""
        return self.stage_dir("predict") / "metrics.png"

    @property
    def predicted_rasters_dir(self) -> Path:
        """Folder of the predictions of ``predict.rasters``."""
        return self.stage_dir("predict") / "rasters"

    def raster_probability(self, stem: str) -> Path:
        return self.predicted_rasters_dir / f"{stem}_probability.tif"

    def raster_mask(self, stem: str) -> Path:
        return self.predicted_rasters_dir / f"{stem}_mask.tif"

    def raster_farms(self, stem: str) -> Path:
        return self.predicted_rasters_dir / f"{stem}_farms.gpkg"

    # map ---------------------------------------------------------------------------------
    def for_map_window(self, name: str) -> RunPaths:
        """The paths of the map's earlier window ``name`` (``map/windows/<name>/``)."""
        return RunPaths(self.data_root, self.run, safe_name(name))

    @property
    def map_windows_dir(self) -> Path:
        """Folder of the earlier windows of a map over time (one folder each)."""
        return self.stage_dir("map") / "windows"

    @property
    def map_dir(self) -> Path:
        """``map/`` (latest window), or ``map/windows/<name>/`` of an earlier window."""
        if self.map_window:
            return self.map_windows_dir / self.map_window
        return self.stage_dir("map")

    @property
    def map_timeline(self) -> Path:
        """CSV: installed area and farm count per window
        (:data:`pipeline.timeline.tables.WINDOW_COLUMNS`)."""
        return self.stage_dir("map") / "timeline.csv"

    @property
    def map_timeline_chart(self) -> Path:
        """PNG: installed area and farm count per window."""
        return self.stage_dir("map") / "timeline.png"

    @property
    def map_site_windows(self) -> Path:
        """CSV: one row per site and window
        (:data:`pipeline.timeline.tables.SITE_WINDOW_COLUMNS`)."""
        return self.stage_dir("map") / "site_windows.csv"

    @property
    def map_sites(self) -> Path:
        """GeoPackage of every farm site over time, disappeared ones included (layer ``sites``)."""
        return self.stage_dir("map") / "sites.gpkg"

    @property
    def map_chunks_dir(self) -> Path:
        """Folder of the per-chunk outputs (kept for re-runs)."""
        return self.map_dir / "chunks"

    def map_chunk(self, chunk_id: str) -> Path:
        """float32 probability of one chunk's core (nodata NaN), tagged with its digest."""
        return self.map_chunks_dir / f"{chunk_id}.tif"

    def map_chunk_provenance(self, chunk_id: str) -> Path:
        """Acquisition index of every pixel of one chunk's core (0 = none)."""
        return self.map_chunks_dir / f"{chunk_id}_src.tif"

    def map_probability(self, epsg: int) -> Path:
        """Probability COG of one UTM zone (mosaic of the chunk cores, overviews)."""
        return self.map_dir / f"probability_{epsg}.tif"

    def map_provenance(self, epsg: int) -> Path:
        """Provenance COG of one UTM zone: index into ``acquisitions.csv`` per pixel."""
        return self.map_dir / f"provenance_{epsg}.tif"

    @property
    def map_farms(self) -> Path:
        """GeoPackage of mapped farms (EPSG:4326, layer ``farms``)."""
        return self.map_dir / "farms.gpkg"

    @property
    def map_gaps(self) -> Path:
        """GeoPackage of chunks left unmapped and why (layer ``gaps``)."""
        return self.map_dir / "gaps.gpkg"

    @property
    def map_acquisitions(self) -> Path:
        """CSV: the acquisitions provenance indices refer to."""
        return self.map_dir / "acquisitions.csv"

    @property
    def map_catalog(self) -> Path:
        """Self-contained STAC catalog of the map's outputs."""
        return self.map_dir / "stac" / "catalog.json"

    @property
    def map_patches_dir(self) -> Path:
        """Folder of the composite patches cut around mapped farms."""
        return self.map_dir / "patches"

    def map_patch(self, farm_id: str) -> Path:
        """10-band uint16 composite around one mapped farm."""
        return self.map_patches_dir / f"{farm_id}.tif"

    def map_patch_scl(self, farm_id: str) -> Path:
        """Composite SCL on the farm patch's grid."""
        return self.map_patches_dir / f"{farm_id}_scl.tif"

    def map_patch_probability(self, farm_id: str) -> Path:
        """Probability cut from the zone mosaic on the farm patch's grid."""
        return self.map_patches_dir / f"{farm_id}_prob.tif"

    def map_patch_mask(self, farm_id: str) -> Path:
        """Label mask (labels/farms.gpkg) rasterized on the farm patch's grid."""
        return self.map_patches_dir / f"{farm_id}_mask.tif"

    def patch_files(self, patch_id: str) -> PatchFiles:
        """The files of a fetched patch (``p00012``), or of a mapped farm's patch (``m0003``,
        under ``map/patches/``) when no fetched patch has that id."""
        if not self.image(patch_id).is_file() and self.map_patch(patch_id).is_file():
            return PatchFiles(
                self.map_patch(patch_id),
                self.map_patch_scl(patch_id),
                self.map_patch_mask(patch_id),
                self.map_patch_probability(patch_id),
                None,
                mapped=True,
            )
        return PatchFiles(
            self.image(patch_id),
            self.scl(patch_id),
            self.mask(patch_id),
            self.probability(patch_id),
            self.predicted_mask(patch_id),
        )

    @property
    def map_patches_index(self) -> Path:
        """GeoPackage: one row per farm patch (patch_id, farm_id, epsg, relative paths)."""
        return self.map_dir / "patches.gpkg"

    @property
    def map_summary(self) -> Path:
        """JSON: chunk counts, failures and gaps of the last map run (also on failure)."""
        return self.map_dir / "summary.json"

    # attribute ---------------------------------------------------------------------------
    def attribution(self, patch_id: str, method: str, target: str, target_id: str = "") -> Path:
        """Attribution COG: ``<pid>.tif`` for a patch-level target, ``<pid>__<target_id>.tif``
        (with :func:`safe_name`) for an object target."""
        name = f"{patch_id}__{safe_name(target_id)}" if target_id else patch_id
        return self.stage_dir("attribute") / method / target / f"{name}.tif"

    def attribution_vrt(self, method: str, target: str, epsg: int) -> Path:
        """Mosaic (VRT) of one method's attributions of one target kind in one UTM zone."""
        return self.stage_dir("attribute") / f"{method}_{target}_{epsg}.vrt"

    @property
    def attribution_index(self) -> Path:
        """CSV: one row per attribution raster (patch_id, method, target, path, gap, ...)."""
        return self.stage_dir("attribute") / "index.csv"

    @property
    def attribution_farms(self) -> Path:
        """GeoPackage: per (farm, patch, method) attribution mass inside, in the ring, outside."""
        return self.stage_dir("attribute") / "farms.gpkg"

    @property
    def quicklooks_dir(self) -> Path:
        """Folder of the PNG quicklooks: ``<method>/<target>/<name>.png``."""
        return self.stage_dir("attribute") / "quicklooks"

    def quicklook(self, method: str, target: str, name: str) -> Path:
        return self.quicklooks_dir / method / target / f"{name}.png"

    def attribution_scene(self, method: str, target: str, crs_name: str) -> Path:
        """A stitched per-zone mosaic of patch attributions."""
        return self.stage_dir("attribute") / "scene" / method / target / f"{crs_name}.tif"

    def map_truecolour(self, epsg: int) -> Path:
        """Low-resolution true-colour mosaic (B04, B03, B02) of one UTM zone, when the map
        stage writes one."""
        return self.stage_dir("map") / f"truecolour_{epsg}.tif"

    # audit -------------------------------------------------------------------------------
    @property
    def cues(self) -> Path:
        """CSV: per patch and cue, its pixel share or why it is not computable."""
        return self.stage_dir("audit") / "cues.csv"

    @property
    def reliance(self) -> Path:
        return self.stage_dir("audit") / "reliance.csv"

    @property
    def run_flags(self) -> Path:
        """CSV: per method x target kind x cue, pooled over the run."""
        return self.stage_dir("audit") / "run_flags.csv"

    @property
    def flags(self) -> Path:
        """CSV: one row per farm target and cue, with the counterfactual and the verdict."""
        return self.stage_dir("audit") / "flags.csv"

    @property
    def concepts(self) -> Path:
        """JSON: model-level concept tests (TCAV) per concept and layer, with the verdict."""
        return self.stage_dir("audit") / "concepts.json"

    @property
    def concepts_table(self) -> Path:
        """CSV: one row per concept and layer of the concept tests (:data:`CONCEPT_COLUMNS`)."""
        return self.stage_dir("audit") / "concepts.csv"

    @property
    def flags_gpkg(self) -> Path:
        """GeoPackage: one row per farm (layer ``flags``), its worst verdict and one column
        group per cue (:data:`pipeline.audit.flags.FARM_COLUMNS`)."""
        return self.stage_dir("audit") / "flags.gpkg"

    @property
    def sanity(self) -> Path:
        """JSON: model and data randomization checks."""
        return self.stage_dir("audit") / "sanity.json"

    @property
    def faithfulness(self) -> Path:
        return self.stage_dir("audit") / "faithfulness.csv"

    @property
    def faithfulness_curves(self) -> Path:
        return self.stage_dir("audit") / "faithfulness_curves.json"

    # triage ------------------------------------------------------------------------------
    @property
    def triage_review(self) -> Path:
        """GeoPackage of review tasks (EPSG:4326): layers ``candidates`` (mapped farms with no
        OSM farm) and ``suspects`` (OSM farms the model does not find)."""
        return self.stage_dir("triage") / "review.gpkg"

    @property
    def triage_geojson(self) -> Path:
        """GeoJSON FeatureCollection: one feature per review task, evidence as properties."""
        return self.stage_dir("triage") / "review.geojson"

    # report ------------------------------------------------------------------------------
    @property
    def report(self) -> Path:
        return self.stage_dir("report") / "index.html"


@dataclass(frozen=True)
class WorldPaths:
    """Files of one demo world under ``<data_root>/worlds/<name>/``."""

    data_root: Path
    name: str

    @property
    def root(self) -> Path:
        return self.data_root / "worlds" / self.name

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def catalog(self) -> Path:
        """The static STAC catalog's root document."""
        return self.root / "stac" / "catalog.json"

    @property
    def osm(self) -> Path:
        """The OpenStreetMap extract of the planted farms."""
        return self.root / "world.osm.pbf"

    @property
    def truth(self) -> Path:
        """Folder of the planted truth (farms, snow, distractors, ``truth.json``, ``snow.tif``)."""
        return self.root / "truth"
