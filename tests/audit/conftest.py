"""Fixtures of the audit tests: the miniature attributed run (see ``audit_fixtures``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from audit_fixtures import audited_run

from pipeline.config import RunConfig
from pipeline.paths import RunPaths


@pytest.fixture(scope="session")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, RunPaths]:
    """The miniature run after the audit and report stages (built once per session)."""
    return audited_run(tmp_path_factory.mktemp("audited"))
