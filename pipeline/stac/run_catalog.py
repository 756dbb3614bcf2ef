"""The run's outputs as a STAC catalog: ``runs/<run>/catalog.json`` beside the stage folders.

Four collections under ``runs/<run>/stac/``: ``patches`` (one item per fetched patch: image,
SCL, label mask, each with its QGIS style; ``derived_from`` links to the Sentinel-2 items it was
read from), ``predictions`` and ``attributions`` (one item per patch, ``derived_from`` the patch
and the model) and ``model`` (the exported model, its SHA-256 and band order). The map stage's
own catalog is linked as a child when the run has one. Hrefs are relative, so the run folder can
move; the builders are pure (dicts in, dicts out) and :func:`write_run_catalog` writes the
files (the stage runner calls it after every stage).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from os.path import relpath
from pathlib import Path
from typing import Any, Final

import geopandas as gpd
import pandas as pd
import rasterio
from rasterio.errors import RasterioError
from shapely.geometry import box, mapping, shape

from pipeline.bands import BANDS, EARTH_SEARCH_ASSET
from pipeline.config import RunConfig
from pipeline.geo.styles import style_path
from pipeline.io import atomic_dir, sha256_file, write_json
from pipeline.paths import RunPaths

log = logging.getLogger(__name__)

STAC_VERSION: Final[str] = "1.0.0"
EO: Final[str] = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
PROJ: Final[str] = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
COG: Final[str] = "image/tiff; application=geotiff; profile=cloud-optimized"
QML: Final[str] = "application/xml"

#: The model's input bands as STAC ``eo:bands`` (name and common name).
EO_BANDS: Final[list[dict[str, str]]] = [
    {"name": b, "common_name": EARTH_SEARCH_ASSET[b]} for b in BANDS
]

#: The run catalog's collections: id -> description.
COLLECTIONS: Final[dict[str, str]] = {
    "patches": "Fetched Sentinel-2 L2A patches (10 bands, reflectance x 10000), SCL, label masks",
    "predictions": "Farm probability and predicted mask per patch",
    "attributions": "Attribution rasters per patch, method and target (band 'aggregate')",
    "model": "The trained U-Net the predictions and attributions come from",
}


def _asset(path: Path, item_dir: Path, title: str, roles: list[str], **extra: Any) -> dict:
    kind = QML if path.suffix == ".qml" else COG
    return {"href": relpath(path, item_dir), "type": kind, "title": title, "roles": roles, **extra}


def _with_styles(
    assets: dict[str, dict], files: Mapping[str, tuple[Path, str]], item_dir: Path
) -> dict[str, dict]:
    """Assets for ``files`` (key -> (path, title)) that exist, each with its QGIS style."""
    for key, (path, title) in files.items():
        if path.is_file():
            assets[key] = _asset(path, item_dir, title, ["data"])
            if style_path(path).is_file():
                assets[f"{key}_style"] = _asset(
                    style_path(path), item_dir, f"QGIS style of {title}", ["style"]
                )
    return assets


def item(
    ident: str,
    geometry: Any,
    when: str,
    properties: Mapping[str, Any],
    assets: Mapping[str, dict],
    derived_from: Sequence[str] = (),
) -> dict[str, Any]:
    """A STAC item (EPSG:4326 ``geometry``; ``when`` ISO 8601; ``derived_from`` hrefs)."""
    bounds = list(geometry.bounds) if geometry is not None else None
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EO, PROJ],
        "id": ident,
        "geometry": mapping(geometry) if geometry is not None else None,
        "bbox": bounds,
        "properties": {"datetime": when, **properties},
        "links": [
            {"rel": "derived_from", "href": h, "type": "application/json"} for h in derived_from
        ],
        "assets": dict(assets),
    }


def collection(ident: str, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A STAC collection of ``items`` (extent from their bboxes and datetimes)."""
    boxes = [i["bbox"] for i in items if i.get("bbox")]
    bbox = (
        [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
        if boxes
        else [-180.0, -90.0, 180.0, 90.0]
    )
    times = sorted(i["properties"]["datetime"] for i in items if i["properties"].get("datetime"))
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "id": ident,
        "description": COLLECTIONS[ident],
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[times[0], times[-1]] if times else [None, None]]},
        },
        "links": [],
    }


# ------------------------------------------------------------------------------------ reading
def _patch_rows(paths: RunPaths) -> gpd.GeoDataFrame:
    if not paths.fetch_index.is_file():
        return gpd.GeoDataFrame(geometry=[], crs=4326)
    index = gpd.read_file(paths.fetch_index, layer="patches")
    return index[index["status"] == "ok"].sort_values("patch_id")


def patch_header(path: Path) -> tuple[dict[str, str], int | None]:
    """A patch COG's tags and EPSG code (``({}, None)`` when it cannot be read)."""
    try:
        with rasterio.open(path) as src:
            return src.tags(), (src.crs.to_epsg() if src.crs else None)
    except RasterioError:
        return {}, None


def source_item_hrefs(cfg: RunConfig) -> dict[str, str]:
    """Sentinel-2 item id -> absolute path of its item file, for a static catalog (``{}`` for
    a STAC API, whose items are ``<api>/collections/<collection>/items/<id>``)."""
    catalog = cfg.fetch.catalog
    if "://" in catalog and not catalog.startswith("file://"):
        return {}
    root = Path(catalog.removeprefix("file://"))
    if not root.is_file():
        return {}
    out = {}
    for path in root.parent.rglob("*.json"):
        if path == root:
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("type") == "Feature":
            out[str(doc["id"])] = str(path.resolve())
    return out


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat() if path.exists() else ""


def _source_href(item_id: str, cfg: RunConfig, static: Mapping[str, str], item_dir: Path) -> str:
    if item_id in static:
        return relpath(static[item_id], item_dir)
    base = cfg.fetch.catalog.rstrip("/")
    return f"{base}/collections/{cfg.fetch.collection}/items/{item_id}"


# --------------------------------------------------------------------------------- building
def patch_items(cfg: RunConfig, paths: RunPaths) -> list[dict[str, Any]]:
    """The ``patches`` collection's items."""
    folder = paths.catalog_dir / "patches"
    static = source_item_hrefs(cfg)
    items = []
    for row in _patch_rows(paths).to_dict(orient="records"):
        pid = str(row["patch_id"])
        files = {
            "image": (paths.image(pid), "Sentinel-2 L2A, 10 bands, reflectance x 10000"),
            "scl": (paths.scl(pid), "scene classification (SCL)"),
            "mask": (paths.mask(pid), "label mask (1 = farm)"),
        }
        assets = _with_styles({}, files, folder)
        if "image" in assets:
            assets["image"]["eo:bands"] = EO_BANDS
        tags, epsg = patch_header(paths.image(pid))
        ids = list(json.loads(tags.get("stac_item_ids", "[]") or "[]"))
        when = tags.get("datetime") or str(row.get("datetime") or "") or _mtime(paths.image(pid))
        props = {"platform": tags.get("platform", ""), "sentinel2:items": ids, "proj:epsg": epsg}
        sources = [_source_href(i, cfg, static, folder) for i in ids]
        items.append(item(pid, row["geometry"], when, props, assets, sources))
    return items


def model_item(paths: RunPaths, patches: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The ``model`` collection's item over the patches' extent (``None`` before training)."""
    if not paths.model.is_file() or not patches:
        return None
    folder = paths.catalog_dir / "model"
    when = datetime.fromtimestamp(paths.model.stat().st_mtime, UTC).isoformat()
    boxes = [p["bbox"] for p in patches if p.get("bbox")]
    footprint = box(
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    sha = sha256_file(paths.model)
    title = "model weights and metadata (torch.load with weights_only=True)"
    assets = {"model": _asset(paths.model, folder, title, ["data"])}
    assets["model"]["file:checksum"] = "1220" + sha  # multihash of a SHA-256
    props = {"solarfarm:sha256": sha, "solarfarm:bands": list(BANDS), "eo:bands": EO_BANDS}
    return item("model", footprint, when, props, assets)


def per_patch_items(
    kind: str,
    patches: Sequence[Mapping[str, Any]],
    files: Mapping[str, Mapping[str, tuple[Path, str]]],
    has_model: bool,
    paths: RunPaths,
) -> list[dict[str, Any]]:
    """Items of ``predictions`` or ``attributions``: one per patch with files, ``derived_from``
    the patch item and the model item."""
    folder = paths.catalog_dir / kind
    out = []
    for patch in patches:
        found = _with_styles({}, files.get(patch["id"], {}), folder)
        if not found:
            continue
        sources = [f"../patches/{patch['id']}.json"] + (
            ["../model/model.json"] if has_model else []
        )
        geometry = _shape(patch)
        out.append(item(patch["id"], geometry, patch["properties"]["datetime"], {}, found, sources))
    return out


def _shape(patch: Mapping[str, Any]) -> Any:
    return shape(patch["geometry"]) if patch.get("geometry") else None


def prediction_files(paths: RunPaths, patch_ids: Sequence[str]) -> dict[str, dict]:
    """Patch id -> its probability and predicted-mask files."""
    return {
        pid: {
            "probability": (paths.probability(pid), "farm probability (0-1)"),
            "mask": (paths.predicted_mask(pid), "predicted mask (1 = farm)"),
        }
        for pid in patch_ids
    }


def attribution_files(paths: RunPaths) -> dict[str, dict]:
    """Patch id -> its attribution rasters, keyed ``<method>.<target>[.<target id>]``."""
    if not paths.attribution_index.is_file():
        return {}
    index = pd.read_csv(paths.attribution_index, dtype={"patch_id": str, "target_id": str})
    index = index[(index["status"] == "ok") & index["path"].notna()]
    out: dict[str, dict] = {}
    for row in index.itertuples():
        tid = "" if pd.isna(row.target_id) else f".{row.target_id}"
        key = f"{row.method}.{row.target}{tid}"
        title = f"{row.method} attribution of {row.target}{tid.replace('.', ' ')}"
        out.setdefault(str(row.patch_id), {})[key] = (paths.resolve(str(row.path)), title)
    return out


def _linked(coll: dict, items: Sequence[dict]) -> dict:
    coll["links"] = [
        {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
        {"rel": "parent", "href": "../../catalog.json", "type": "application/json"},
        *({"rel": "item", "href": f"./{i['id']}.json", "type": "application/json"} for i in items),
    ]
    return coll


def write_run_catalog(cfg: RunConfig, paths: RunPaths) -> Path | None:
    """Write ``runs/<run>/catalog.json`` and ``runs/<run>/stac/`` from the outputs that exist
    (``None`` when there is nothing to describe yet)."""
    patches = patch_items(cfg, paths)
    if not patches:
        return None
    model = model_item(paths, patches)
    ids = [p["id"] for p in patches]
    groups = {
        "patches": patches,
        "predictions": per_patch_items(
            "predictions", patches, prediction_files(paths, ids), model is not None, paths
        ),
        "attributions": per_patch_items(
            "attributions", patches, attribution_files(paths), model is not None, paths
        ),
        "model": [model] if model else [],
    }
    with atomic_dir(paths.catalog_dir) as tmp:
        for kind, items in groups.items():
            if not items:
                continue
            (tmp / kind).mkdir()
            for it in items:
                it["links"] += [
                    {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                    {"rel": "parent", "href": "./collection.json", "type": "application/json"},
                    {"rel": "collection", "href": "./collection.json", "type": "application/json"},
                ]
                it["collection"] = kind
                (tmp / kind / f"{it['id']}.json").write_text(json.dumps(it, indent=1))
            coll = _linked(collection(kind, items), items)
            (tmp / kind / "collection.json").write_text(json.dumps(coll, indent=1))
    children = [
        {"rel": "child", "href": f"./stac/{kind}/collection.json", "type": "application/json"}
        for kind, items in groups.items()
        if items
    ]
    if paths.map_catalog.is_file():
        children.append(
            {
                "rel": "child",
                "href": relpath(paths.map_catalog, paths.root),
                "type": "application/json",
                "title": "the map stage's outputs",
            }
        )
    root = {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": f"solarfarm-run-{cfg.run.name}",
        "description": f"Outputs of the solar-farm pipeline run '{cfg.run.name}'",
        "links": [{"rel": "root", "href": "./catalog.json", "type": "application/json"}, *children],
    }
    return write_json(paths.catalog, root)
