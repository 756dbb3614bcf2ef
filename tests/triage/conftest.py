"""Fixtures of the triage tests: the small label-error world (see ``support.triage``)."""

from support.triage import triage_world  # noqa: F401
