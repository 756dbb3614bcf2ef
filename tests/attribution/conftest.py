"""Fixtures of the attribution tests (helpers live in attribution_support.py, imported by name)."""

from attribution_support import *  # noqa: F403
