"""Typed run configuration: YAML values validated into frozen sections.

``load_config(path, overrides)`` is the one loader. A file may ``extends:`` another (relative
to itself; chains allowed): the base's values are deep-merged first, then the file's own, then
``--set section.key=value`` overrides (parsed as YAML scalars); see
:mod:`pipeline.config.files`. Values one section shares with another are stated once and derived
(:mod:`pipeline.config.derived`): world files from ``world.name``, ``labels.block_size_m`` from
``tiles.block_size_m``. Every key is known and typed; an unknown key or a bad value raises
:class:`~pipeline.errors.ConfigError` naming the key, the value, the file and the fix.
``{data_root}`` in any string value is replaced by ``run.data_root``, so a run can be relocated
with one override.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from pipeline.config.attribute import AttributeConfig
from pipeline.config.audit import AuditConfig
from pipeline.config.base import Section
from pipeline.config.compute import ComputeConfig
from pipeline.config.derived import derive_defaults
from pipeline.config.fetch import FetchConfig
from pipeline.config.files import deep_merge, read_config
from pipeline.config.labels import LabelsConfig
from pipeline.config.map import MapConfig
from pipeline.config.predict import PredictConfig
from pipeline.config.report import ReportConfig
from pipeline.config.run import RunSection
from pipeline.config.tiles import TilesConfig
from pipeline.config.train import TrainConfig
from pipeline.config.triage import TriageConfig
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
    "TriageConfig",
    "WorldConfig",
    "config_digest",
    "load_config",
    "parse_overrides",
]


class RunConfig(Section):
    """A whole run: one section per stage plus the optional demo world.

    Defaults derived from other sections (:func:`~pipeline.config.derived.derive_defaults`)
    are filled in before validation: a demo world's files, and the block size shared by
    ``labels`` and ``tiles``.
    """

    run: RunSection
    world: WorldConfig | None = None
    labels: LabelsConfig
    fetch: FetchConfig
    tiles: TilesConfig = TilesConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    attribute: AttributeConfig = AttributeConfig()
    audit: AuditConfig = AuditConfig()
    triage: TriageConfig = TriageConfig()
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

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        return derive_defaults(data) if isinstance(data, dict) else data

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
    """Read ``path`` (YAML) and the files it extends, apply ``--set`` overrides, and validate.

    Raises:
        ConfigError: a file is missing or not YAML, an ``extends`` chain is broken or cyclic, a
            key is unknown, or a value is invalid.
    """
    source = read_config(path)
    merged = deep_merge(source.values, parse_overrides(overrides))
    run = merged.get("run")
    data_root = str(run.get("data_root", "data")) if isinstance(run, dict) else "data"
    merged = _expand(merged, data_root)
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_describe(err, source.describe())) from err


def config_digest(cfg: RunConfig, sections: Iterable[str]) -> str:
    """SHA-256 over the named sections (and the seed): what a stage's outputs depend on.

    Keys a section declares ``digest_optional`` count only once set
    (:meth:`~pipeline.config.base.Section.digest_values`).
    """
    payload: dict[str, Any] = {}
    for name in sorted(set(sections)):
        section = getattr(cfg, name)
        payload[name] = section.digest_values() if isinstance(section, Section) else section
    payload["seed"] = cfg.run.seed
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()
