"""The command line: --version, status, one clear error per bad input, quiet third parties."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.cli import QuietThirdParty, main, version
from pipeline.config import config_digest, load_config
from pipeline.manifest import Manifest
from pipeline.paths import RunPaths
from pipeline.stages import STAGES

REAL = "configs/example-gujarat.yaml"  # no demo world: labels has no upstream


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"pipeline {version()}"


def test_status_lists_each_stage_done_stale_or_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = f"run.data_root={tmp_path}"
    cfg = load_config(REAL, [root])
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    Manifest("labels", config_digest(cfg, ["labels"]), {}, [], {}, 1.0).write(
        paths.manifest("labels")
    )
    assert main(["status", "--config", REAL, "--set", root]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines == {"labels": "done"} | {s: "missing" for s in STAGES if s != "labels"}
    assert main(["status", "--config", REAL, "--set", root, "--set", "labels.min_area_m2=1"]) == 0
    assert "labels     stale    config changed: labels" in capsys.readouterr().out


def test_a_pipeline_error_is_one_message_and_a_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["tiles", "--config", REAL, "--set", f"run.data_root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: the labels stage's manifest not found at ")
    assert "Run `make labels RUN=" in err


def test_third_party_chatter_is_kept_out_of_the_default_output() -> None:
    quiet = QuietThirdParty()

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "msg", None, None)

    assert quiet.filter(record("pipeline.stages", logging.INFO))
    assert not quiet.filter(record("pyogrio._io", logging.INFO))  # "Created 50 records"
    assert not quiet.filter(record("lightning.pytorch.utilities.rank_zero", logging.INFO))
    assert not quiet.filter(record("py.warnings", logging.WARNING))  # NotGeoreferencedWarning
    assert quiet.filter(record("distributed.worker", logging.ERROR))
