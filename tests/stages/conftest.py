"""Fixtures of the stage tests, each owned by the support module of its package."""

from support.attribution import one_torch_thread  # noqa: F401
from support.audit import audited  # noqa: F401
from support.osm import demo_osm, make_cfg  # noqa: F401
from support.stac import cog_root, server  # noqa: F401
from support.tiles import _base_run, labelled_run  # noqa: F401
from support.triage import triage_world  # noqa: F401
