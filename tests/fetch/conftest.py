"""Fixtures of the fetch tests (helpers live in fetch_support.py, imported by name)."""

from fetch_support import *  # noqa: F403
