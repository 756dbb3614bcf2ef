"""One search for many footprints: each keeps the items, in the order, of its own search."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pystac
import shapely
from shapely.geometry import box, mapping

from pipeline.stac.candidates import footprint_candidates, portable, search_extent
from pipeline.stac.source import ItemQuery, StaticCatalogSource


class CountingSource(StaticCatalogSource):
    """A static catalog that counts its searches."""

    calls = 0

    def search(self, query: ItemQuery) -> list[pystac.Item]:
        self.calls += 1
        return super().search(query)


def _catalog(root: Path) -> CountingSource:
    """Three items: two over the west square (days 3 and 1), one over the east square (day 2)."""
    catalog = pystac.Catalog("c", "candidates")
    for name, geom, day in (
        ("w3", box(0, 0, 1, 1), 3),
        ("w1", box(0, 0, 1.5, 1), 1),
        ("e2", box(2, 0, 3, 1), 2),
    ):
        item = pystac.Item(
            name, mapping(geom), list(geom.bounds), datetime(2023, 7, day, tzinfo=UTC), {}
        )
        item.collection_id = "s2"
        item.add_asset("blue", pystac.Asset(f"./{name}_B02.tif"))
        catalog.add_item(item)
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return CountingSource(str(root / "catalog.json"))


def test_one_search_unless_the_cap_may_cut_it(tmp_path: Path) -> None:
    source = _catalog(tmp_path)
    feet = {"west": box(0.2, 0.2, 0.4, 0.4), "edge": box(1.2, 0.2, 2.5, 0.4)}
    query = ItemQuery(box(0, 0, 0, 0), "s2", "2023-07-01/2023-07-31", 100, 5)
    own = {
        k: [i.id for i in source.search(ItemQuery(g, "s2", query.datetime, 100, 5))]
        for k, g in feet.items()
    }
    source.calls = 0
    picked = footprint_candidates(source, query, feet)
    assert source.calls == 1
    assert (
        {k: [i.id for i in v] for k, v in picked.items()}
        == own
        == {
            "west": ["w1", "w3"],  # by datetime, as the source orders them
            "edge": ["w1", "e2"],
        }
    )
    # one item per footprint: the area search's cap (2) is reached, so each is searched alone
    source.calls = 0
    one = ItemQuery(query.geometry, "s2", query.datetime, 100, 1)
    picked = footprint_candidates(source, one, feet)
    assert source.calls == 1 + len(feet)
    assert {k: [i.id for i in v] for k, v in picked.items()} == {"west": ["w1"], "edge": ["w1"]}


def test_extent_and_portable_items(tmp_path: Path) -> None:
    feet = [box(i, 0, i + 0.5, 0.5) for i in range(3)]
    assert search_extent(feet).area == 0.75
    many = [box(i * 1e-3, 0, i * 1e-3 + 5e-4, 5e-4) for i in range(600)]
    extent = search_extent(many)  # 3000 vertices: their bounding box
    assert len(extent.exterior.coords) == 5
    assert extent.bounds == shapely.union_all(many).bounds
    item = next(iter(_catalog(tmp_path).load()))
    doc = portable(item)
    href = doc["assets"]["blue"]["href"]
    assert href == str(tmp_path / item.id / f"{item.id}_B02.tif") and doc["links"] == []
    again = pystac.Item.from_dict(doc)
    assert again.collection_id == "s2" and again.assets["blue"].get_absolute_href() == href
