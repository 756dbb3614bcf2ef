"""Typed run configuration: YAML values validated into frozen sections.

``load_config(path, overrides)`` is the one loader. Every key is known and typed; an unknown
key or a bad value raises :class:`~pipeline.errors.ConfigError` naming the key, the value and
the fix. ``--set section.key=value`` overrides are parsed as YAML scalars. ``{data_root}`` in
any string value is replaced by ``run.data_root``, so a run can be relocated with one override.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from pipeline.config.attribute import AttributeConfig
from pipeline.config.audit import AuditConfig
from pipeline.config.base import Section
from pipeline.config.compute import ComputeConfig
from pipeline.config.fetch import FetchConfig
from pipeline.config.labels import LabelsConfig
from pipeline.config.map import MapConfig
from pipeline.config.predict import PredictConfig
from pipeline.config.report import ReportConfig
from pipeline.config.run import RunSection
from pipeline.config.tiles import TilesConfig
from pipeline.config.train import TrainConfig
from pipeline.config.world import WorldConfig
from pipeline.errors import ConfigError

__all__ = [
    "AttributeConfig",
    "AuditConfig",
    "ComputeConfig",
    "FetchConfig",
    "LabelsConfig",
    "MapConfig",
    "PredictConfig",
    "ReportConfig",
    "RunConfig",
    "RunSection",
    "Section",
    "TilesConfig",
    "TrainConfig",
    "WorldConfig",
    "config_digest",
    "load_config",
    "parse_overrides",
]


class RunConfig(Section):
    """A whole run: one section per stage plus the optional demo world."""

    run: RunSection
    world: WorldConfig | None = None
    labels: LabelsConfig
    fetch: FetchConfig
    tiles: TilesConfig = TilesConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    attribute: AttributeConfig = AttributeConfig()
    audit: AuditConfig = AuditConfig()
    report: ReportConfig = ReportConfig()
    map: MapConfig = MapConfig()
    compute: ComputeConfig = ComputeConfig()

    @model_validator(mode="after")
    def _halo_covers_overlap(self) -> RunConfig:
        if self.map.halo_px < self.predict.overlap:
            raise ValueError(
                f"map.halo_px {self.map.halo_px} is smaller than predict.overlap "
                f"{self.predict.overlap}: chunk seams would show. Set map.halo_px to at least "
                f"{self.predict.overlap}"
            )
        return self

    @property
    def split_seed(self) -> int:
        """Seed of the spatial split (``tiles.split_seed``, else ``run.seed``)."""
        return self.run.seed if self.tiles.split_seed is None else self.tiles.split_seed


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "run.seed=1"]`` into a nested dict of YAML-parsed values."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"--set {item!r} is not of the form section.key=value; "
                "write e.g. --set train.epochs=3"
            )
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with another --set on {part!r}")
        node[leaf] = yaml.safe_load(raw) if raw else None
    return nested


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _subsection(section: type[Section], name: str) -> type[Section]:
    """The section class of field ``name`` (unwrapping ``X | None``), else ``section``."""
    field = section.model_fields.get(name)
    ann = getattr(field, "annotation", None)
    for arg in getattr(ann, "__args__", (ann,)):
        if isinstance(arg, type) and issubclass(arg, Section):
            return arg
    return section


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            section: type[Section] = RunConfig
            for part in item["loc"][:-1]:
                section = _subsection(section, str(part))
            known = ", ".join(sorted(section.model_fields))
            lines.append(
                f"  - unknown key {key!r}; valid keys here are: {known}. "
                "Fix the spelling or remove it."
            )
        else:
            value = item.get("input")
            shown = json.dumps(value, default=str)[:80]
            lines.append(f"  - {key} = {shown}: {item['msg']}. Fix: set a valid value for {key}.")
    return "\n".join(lines)


def _expand(node: Any, data_root: str) -> Any:
    """Replace ``{data_root}`` in every string value (paths to demo worlds, caches)."""
    if isinstance(node, dict):
        return {k: _expand(v, data_root) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, data_root) for v in node]
    if isinstance(node, str):
        return node.replace("{data_root}", data_root)
    return node


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read ``path`` (YAML), apply ``--set`` overrides, and validate.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a value is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; pick one of configs/*.yaml or pass --config PATH"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML ({err}); fix the syntax") from err
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections, got {type(raw).__name__}"
        )
    merged = _merge(raw, parse_overrides(overrides))
    run = merged.get("run")
    data_root = str(run.get("data_root", "data")) if isinstance(run, dict) else "data"
    merged = _expand(merged, data_root)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_describe(err, str(path))) from err


def config_digest(cfg: RunConfig, sections: Iterable[str]) -> str:
    """SHA-256 over the named sections (and the seed): what a stage's outputs depend on."""
    payload = {name: cfg.model_dump(mode="json")[name] for name in sorted(set(sections))}
    payload["seed"] = cfg.run.seed
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
