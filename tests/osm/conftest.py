"""Fixtures of the OSM tests (hand-written OSM files, in ``support.osm``)."""

from support.osm import demo_osm, make_cfg  # noqa: F401
