"""Fixtures of the audit tests: the miniature attributed run (see ``support.audit``)."""

from support.audit import audited  # noqa: F401
