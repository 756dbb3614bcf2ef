"""Fixtures of the STAC tests (the loopback server and its COGs, in ``support.stac``)."""

from support.stac import cog_root, server  # noqa: F401
