"""A self-contained STAC catalog of the map's outputs, for STAC browsers and QGIS.

One item per zone mosaic: geometry the zone's piece of the area, datetime range of the
acquisitions used, assets ``probability``, ``provenance``, ``farms`` and ``acquisitions``, a
``derived_from`` link to every Sentinel-2 item used, and the model's SHA-256 and the config
digest as properties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pystac
from shapely.geometry import mapping

from pipeline.io import atomic_dir
from pipeline.mapping.grid import Zone
from pipeline.mapping.provenance import Acquisition


@dataclass(frozen=True)
class ZoneOutputs:
    """The files of one zone and what they were made from."""

    zone: Zone
    probability: Path
    provenance: Path
    acquisitions: Sequence[Acquisition]


def _href(item: pystac.Item) -> str:
    return item.get_self_href() or next(
        (link.href for link in item.links if link.rel == "self"), item.id
    )


def build_catalog(
    dst: Path,
    zones: Sequence[ZoneOutputs],
    *,
    farms: Path,
    acquisitions_csv: Path,
    model_sha256: str,
    config_digest: str,
) -> Path:
    """Write ``dst`` (``catalog.json``) and its items, atomically; asset hrefs are relative.

    ``zones[i].acquisitions`` must not be empty (pass every acquisition of the area for a zone
    with no mapped pixel): an item needs a time.
    """
    catalog = pystac.Catalog(
        id="solarfarm-map", description="Solar-farm probability maps, provenance and farms"
    )
    for out in zones:
        used = list(out.acquisitions)
        times = sorted(a.when for a in used)
        item = pystac.Item(
            id=f"map-{out.zone.epsg}",
            geometry=mapping(out.zone.lonlat),
            bbox=list(out.zone.lonlat.bounds),
            datetime=None,
            start_datetime=times[0] if times else None,
            end_datetime=times[-1] if times else None,
            properties={
                "proj:epsg": out.zone.epsg,
                "solarfarm:model_sha256": model_sha256,
                "solarfarm:config_digest": config_digest,
            },
        )
        for key, path, media, roles in (
            ("probability", out.probability, pystac.MediaType.COG, ["data"]),
            ("provenance", out.provenance, pystac.MediaType.COG, ["metadata"]),
            ("farms", farms, "application/geopackage+sqlite3", ["data"]),
            ("acquisitions", acquisitions_csv, "text/csv", ["metadata"]),
        ):
            item.add_asset(
                key, pystac.Asset(str(Path(path).resolve()), media_type=media, roles=roles)
            )
        for acq in used:
            for s2 in acq.items:
                item.add_link(pystac.Link("derived_from", _href(s2), pystac.MediaType.JSON))
        catalog.add_item(item)
    with atomic_dir(dst.parent) as tmp:  # beside the final folder: relative hrefs hold
        catalog.normalize_hrefs(f"{tmp.resolve()}/")  # the slash: ".stac.x" is no file name
        catalog.make_all_asset_hrefs_relative()
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return dst
