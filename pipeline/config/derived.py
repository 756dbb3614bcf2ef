"""Defaults one section takes from another, so that a YAML file states each value once.

Applied to the merged values before validation (:class:`~pipeline.config.RunConfig` runs
:func:`derive_defaults`); a key the config sets itself always wins:

- With a ``world:`` section, ``labels.osm_file`` (when labels read a file) and ``fetch.catalog``
  default to that world's files, :class:`~pipeline.paths.WorldPaths` ``.osm`` and ``.catalog``
  under ``run.data_root``.
- ``labels.block_size_m`` defaults to ``tiles.block_size_m``: the plan keeps patches inside the
  blocks the splits are drawn by. Set it only to differ (``null`` places patches freely).
- ``labels.hard_negatives`` (when set) takes ``split_fractions``, ``split_seed`` and
  ``block_size_m`` from ``tiles`` (``split_seed`` falling back to ``run.seed``), so it keeps its
  patches in the blocks the tiles stage will call training blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config.feedback import review_shorthand
from pipeline.config.run import RunSection
from pipeline.config.tiles import DEFAULT_BLOCK_SIZE_M, TilesConfig
from pipeline.paths import WorldPaths


def _field(section: Any, key: str, default: Any = None) -> Any:
    """``section[key]`` of a raw mapping or a validated section, else ``default``."""
    if isinstance(section, Mapping):
        return section.get(key, default)
    return getattr(section, key, default)


def _with_default(data: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    """``data`` with ``section.key`` set to ``value`` unless the section sets it (or is no
    mapping, e.g. an already validated section)."""
    current = data.get(section, {})
    if not isinstance(current, Mapping) or key in current:
        return data
    return {**data, section: {**current, key: value}}


def world_paths(data: Mapping[str, Any]) -> WorldPaths | None:
    """The files of the demo world the values name (``world.name``), or ``None``."""
    name = _field(data.get("world"), "name")
    if not isinstance(name, str):
        return None
    data_root = _field(data.get("run"), "data_root", RunSection.model_fields["data_root"].default)
    return WorldPaths(Path(data_root), name)


def with_world_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Default ``labels.osm_file`` and ``fetch.catalog`` to the world's extract and catalog."""
    world = world_paths(data)
    if world is None:
        return data
    if _field(data.get("labels"), "source", "file") == "file":
        data = _with_default(data, "labels", "osm_file", world.osm)
    return _with_default(data, "fetch", "catalog", str(world.catalog))


def _is_number(value: Any) -> bool:
    """True for a value pydantic reads as a float (a number, or a string of one)."""
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def with_shared_block_size(data: dict[str, Any]) -> dict[str, Any]:
    """Default ``labels.block_size_m`` to ``tiles.block_size_m`` (an invalid value is reported
    once, under ``tiles``)."""
    block = _field(data.get("tiles"), "block_size_m", DEFAULT_BLOCK_SIZE_M)
    if "labels" not in data or not _is_number(block):
        return data
    return _with_default(data, "labels", "block_size_m", block)


def with_hard_negative_splits(data: dict[str, Any]) -> dict[str, Any]:
    """Fill ``labels.hard_negatives``' split settings from ``tiles`` and ``run.seed``."""
    labels = data.get("labels")
    hard = _field(labels, "hard_negatives")
    if not isinstance(labels, Mapping) or hard is None:
        return data
    hard = review_shorthand(hard)
    if not isinstance(hard, Mapping):
        return data
    tiles, run = data.get("tiles"), data.get("run")
    seed = _field(tiles, "split_seed")
    shared = {
        "split_fractions": _field(
            tiles, "split_fractions", TilesConfig.model_fields["split_fractions"].default
        ),
        "split_seed": _field(run, "seed", 0) if seed is None else seed,
        "block_size_m": _field(tiles, "block_size_m", DEFAULT_BLOCK_SIZE_M),
    }
    filled = {**shared, **hard}
    return {**data, "labels": {**labels, "hard_negatives": filled}}


def derive_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """The raw config values with every derived default filled in (see the module docstring)."""
    return with_hard_negative_splits(with_shared_block_size(with_world_paths(data)))
