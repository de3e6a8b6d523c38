"""The settings of a run, decoder (`DecodeConfig`) and tracker (`TrackerConfig`), from one path.

Layers, each later one winning field by field:

1. the dataclasses' defaults;
2. the settings stored in the checkpoint (`model/checkpoint.py`; older checkpoints have none);
3. `--config FILE`: JSON or TOML, `{"decode": {"top_k": 20}, "tracker": {"tag_gate": 1.0}}`;
4. the named flags (`--detection-threshold`, `--tag-threshold`, `--min-person-score`);
5. `--set decode.top_k=20 --set tracker.tag_gate=1.0`.

Names and types are checked against the dataclasses' fields, values by the dataclasses themselves;
any problem is a `UserFacingError` naming the layer it came from. The effective settings are written
with every result (`Settings.to_dict()`: the JSON Lines header, the exports' settings).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_type_hints

from tagtrack.model.codec import DecodeConfig
from tagtrack.model.errors import UserFacingError
from tagtrack.tracker.config import TrackerConfig

log = logging.getLogger(__name__)

SECTIONS: dict[str, type] = {"decode": DecodeConfig, "tracker": TrackerConfig}

Values = dict[str, dict[str, Any]]  # section -> field name -> value
Layer = tuple[str, Values]  # (where the values came from, for messages; the values)


@dataclass
class Settings:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def to_dict(self) -> dict:
        return {"decode": asdict(self.decode), "tracker": asdict(self.tracker)}


def _convert(hint: Any, value: Any) -> Any:
    """`value` (text from the command line, or a JSON / TOML value) as the field's type."""
    optional = type(None) in get_args(hint)
    kind = next(arg for arg in get_args(hint) if arg is not type(None)) if optional else hint
    if kind not in (bool, int, float, str):  # every field today; a new kind of field needs its own parsing here
        raise ValueError(f"a {hint} setting cannot be given as a value here")
    expected = kind.__name__ + (" or none" if optional else "")
    if kind is str:  # a name; the dataclass checks it is one it knows
        if not isinstance(value, str):
            raise ValueError(f"expected a name, got {value!r}")
        return value.strip()
    if isinstance(value, str):
        text = value.strip().lower()
        if optional and text in ("none", "null"):
            return None
        if kind is bool:
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
        else:
            try:
                value = kind(text)
            except ValueError:
                raise ValueError(f"expected {expected}, got {value!r}") from None
            return _finite(value)
    elif value is None and optional:
        return None
    elif kind is bool and isinstance(value, bool):
        return value
    elif kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        _finite(value)
        if kind is int and value != int(value):
            raise ValueError(f"expected int, got {value!r}")
        return kind(value)
    raise ValueError(f"expected {expected}, got {value!r}")


def _finite(value: int | float) -> int | float:
    """Every number setting is finite: inf or nan would reach the outputs (the JSON Lines header, the
    settings file), which JSON cannot hold; a setting meant as "no limit" is None where it exists."""
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


def _checked_values(origin: str, values: Values, lenient: bool = False) -> Values:
    """`values` with every section and field name known and every value of its field's type.
    lenient (a checkpoint's stored settings): unknown names are logged and skipped, e.g. the settings
    of a newer tagtrack's checkpoint."""
    if not isinstance(values, dict):
        raise UserFacingError(f"{origin}: expected sections {', '.join(SECTIONS)}, got {type(values).__name__}")
    checked: Values = {}
    for section, section_values in values.items():
        if section not in SECTIONS:
            if lenient:
                log.warning("%s: ignoring unknown settings section %r", origin, section)
                continue
            raise UserFacingError(f"{origin}: unknown settings section {section!r} (known: {', '.join(SECTIONS)})")
        if not isinstance(section_values, dict):
            raise UserFacingError(f"{origin}: {section} must be a table of names and values")
        hints = get_type_hints(SECTIONS[section])
        known = [f.name for f in fields(SECTIONS[section])]
        checked[section] = {}
        for name, value in section_values.items():
            if name not in known:
                if lenient:
                    log.warning("%s: ignoring unknown setting %s.%s", origin, section, name)
                    continue
                raise UserFacingError(f"{origin}: unknown setting {section}.{name} (known: {', '.join(known)})")
            try:
                checked[section][name] = _convert(hints[name], value)
            except ValueError as error:
                raise UserFacingError(f"{origin}: {section}.{name}: {error}") from None
    return checked


def build_settings(layers: Sequence[Layer], lenient_first: bool = False) -> Settings:
    """The settings after every layer in order; a layer that makes a dataclass refuse its values is
    named in the error. lenient_first: the first layer is a checkpoint's (see `_checked_values`)."""
    settings = Settings()
    for index, (origin, values) in enumerate(layers):
        checked = _checked_values(origin, values, lenient=lenient_first and index == 0)
        try:
            settings = Settings(**{section: replace(getattr(settings, section), **checked.get(section, {}))
                                   for section in SECTIONS})
        except (ValueError, TypeError) as error:
            raise UserFacingError(f"{origin}: {error}") from None
    return settings


def parse_assignments(assignments: Sequence[str], origin: str = "--set") -> Values:
    """`["decode.top_k=20", "tracker.tag_gate=1.0"]` -> `{"decode": {"top_k": "20"}, ...}` (text values,
    converted by `build_settings`)."""
    values: Values = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        section, dot, field_name = name.strip().partition(".")
        if not equals or not dot or not section or not field_name:
            raise UserFacingError(f"{origin} {assignment!r}: expected SECTION.NAME=VALUE, e.g. decode.top_k=20 "
                                  f"(sections: {', '.join(SECTIONS)})")
        values.setdefault(section, {})[field_name] = value
    return values


# What a run records beside its settings (realtime/run.py: run_settings; predict adds flip and scales):
# in a settings file a run wrote, these describe the run and are not settings to apply.
RUN_RECORD_KEYS = ("input_hw", "weights", "keypoints", "flip", "scales")


def read_settings_file(path: str | Path) -> Values:
    """A settings file: TOML (`.toml`) or JSON (anything else), `{section: {name: value}}`.

    The settings file a run writes (`<base>.settings.json`) reads back as it is: its record of the run
    (RUN_RECORD_KEYS) is left out, and a section written as null (`"tracker": null`, a run without
    tracking) is no layer at all."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserFacingError(f"--config {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserFacingError(f"--config {path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            values = json.loads(text)
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise UserFacingError(f"--config {path}: not valid {kind} ({error})") from None
    if not isinstance(values, dict):
        raise UserFacingError(f"--config {path}: expected sections {', '.join(SECTIONS)}, got {type(values).__name__}")
    return {section: section_values for section, section_values in values.items()
            if section not in RUN_RECORD_KEYS and not (section in SECTIONS and section_values is None)}


def check_meaningful(settings: Settings, origin: str = "settings") -> None:
    """Beyond what the decoder needs: scores are within 0..1 (a heatmap / person score)."""
    for name in ("detection_threshold", "min_person_score"):
        value = getattr(settings.decode, name)
        if not 0.0 <= value <= 1.0:
            raise UserFacingError(f"{origin}: decode.{name} must be between 0 and 1 (a heatmap / person score), "
                                  f"got {value}")
