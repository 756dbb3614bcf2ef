"""Fixtures of the report tests: the audit tests' miniature run, audited and reported."""

from __future__ import annotations

import pytest
from support.audit import audited_run

from pipeline.config import RunConfig
from pipeline.paths import RunPaths


@pytest.fixture(scope="session")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, RunPaths]:
    """The miniature run after the audit and report stages (shared with tests/audit)."""
    return audited_run(tmp_path_factory.mktemp("reported"))
