"""Config files on disk: YAML sections, ``extends:`` chains and the deep merge.

A config may start with ``extends: <file>`` (a path relative to the extending file). The base
is read first (it may extend another file in turn), then the file's own keys are merged into it:
mappings merge key by key, any other value (a scalar, a list, ``null``) replaces the base's.
Only plain values are merged here; validation happens once, on the merged result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from pipeline.errors import ConfigError

#: The top-level key naming a config's base file.
EXTENDS: Final[str] = "extends"


@dataclass(frozen=True)
class ConfigSource:
    """A config's merged values and the files they came from.

    Attributes:
        values: The merged sections (``extends`` removed), before validation.
        chain: The files read, the requested one first and its bases after it.
    """

    values: dict[str, Any]
    chain: tuple[Path, ...]

    def describe(self) -> str:
        """``configs/a.yaml`` or ``configs/a.yaml (extends configs/b.yaml)``: for messages."""
        head, *bases = self.chain
        return str(head) if not bases else f"{head} (extends {', '.join(map(str, bases))})"


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: mappings key by key, other values replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_sections(path: Path) -> dict[str, Any]:
    """One YAML file as a mapping of sections (an empty file is an empty mapping).

    Raises:
        ConfigError: the file is missing, is not YAML, or does not hold a mapping.
    """
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
    return raw


def _base_path(path: Path, base: object, seen: tuple[Path, ...]) -> Path:
    """The file ``path`` extends, checked: a string naming an existing file not yet in the chain.

    Raises:
        ConfigError: ``extends`` is not a file name, names a missing file, or closes a cycle.
    """
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(
            f"config file {path}: extends = {base!r} must name one base file, relative to "
            f"{path.parent} (e.g. extends: demo.yaml)"
        )
    target = path.parent / base
    if not target.is_file():
        raise ConfigError(
            f"config file {path} extends {base!r}, but {target} does not exist; fix the "
            "file name (paths are relative to the extending file) or remove the extends line"
        )
    if target.resolve() in {p.resolve() for p in seen}:
        cycle = " -> ".join(str(p) for p in (*seen, target))
        raise ConfigError(
            f"config file {path} extends {base!r}, which closes a cycle ({cycle}); "
            "remove one of these extends lines"
        )
    return target


def read_config(path: str | Path) -> ConfigSource:
    """Read ``path`` and every base it extends, merged base first.

    Raises:
        ConfigError: a file of the chain is missing, not YAML, not a mapping, or the chain
            names a missing base or closes a cycle.
    """
    chain: list[Path] = [Path(path)]
    layers = [read_sections(chain[0])]
    while EXTENDS in layers[-1]:
        base = layers[-1].pop(EXTENDS)
        chain.append(_base_path(chain[-1], base, tuple(chain)))
        layers.append(read_sections(chain[-1]))
    values: dict[str, Any] = {}
    for layer in reversed(layers):
        values = deep_merge(values, layer)
    return ConfigSource(values, tuple(chain))
