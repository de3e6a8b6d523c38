"""The settings a model is used with, decoder (`DecodeConfig`) and tracker (`TrackerConfig`), resolved in one place.

Layers, each later one winning field by field:

1. the dataclasses' defaults;
2. the settings stored with the model (`model/checkpoint.py`; older checkpoints have none), read leniently:
   names this version does not know are logged and skipped (a newer tagtrack's checkpoint);
3. `--config FILE`: JSON or TOML, `{"decode": {"top_k": 20}, "tracker": {"tag_gate": 1.0}}`;
4. the named flags (`FLAGS`: `--detection-threshold`, `--tag-threshold`, `--min-person-score`);
5. `--set decode.top_k=20 --set tracker.tag_gate=1.0` (the API's `settings=` dictionary is this layer).

`resolve_settings(stored, layers)` is the one function that turns them into effective settings: every command,
the API, the benches, `train` (a training config's settings) and `eval-track --retrack` call it. Names and types
are checked against the dataclasses' fields, values by the dataclasses themselves and by `check_ranges`; any
problem is a `UserFacingError` naming the layer it came from.

To add a setting, add a field to `DecodeConfig` (model/codec.py) or `TrackerConfig` (tracker/config.py): `--set`,
`--config` and the stored settings take it from there. A named flag is one row of `FLAGS`; a section one entry of
`SECTIONS`.

This module imports nothing heavy at import time (the dataclasses are imported when first needed): the CLI
reads `FLAGS` while it builds its parser, which must not load OpenCV.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_type_hints

from tagtrack.model.errors import UserFacingError

if TYPE_CHECKING:
    from tagtrack.model.codec import DecodeConfig
    from tagtrack.tracker.config import TrackerConfig

log = logging.getLogger(__name__)

# The one list of settings sections: section name -> (module, dataclass) holding its fields. The tracker's
# dataclass is a leaf module (tracker/config.py imports nothing of the project), so this is the only place
# model/ names something outside it.
SECTIONS: dict[str, tuple[str, str]] = {
    "decode": ("tagtrack.model.codec", "DecodeConfig"),
    "tracker": ("tagtrack.tracker.config", "TrackerConfig"),
}

Values = dict[str, dict[str, Any]]  # section -> field name -> value
Layer = tuple[str, Values]  # (where the values came from, for messages; the values)

STORED_DEFAULT = "default: the model's stored value"  # what a flag's help says of its default


@dataclass(frozen=True)
class Flag:
    """A setting with its own command-line option (and the API keyword of the same name)."""

    keyword: str  # argparse dest and API keyword, e.g. "detection_threshold"
    section: str
    name: str  # the field in its section
    metavar: str
    help: str

    @property
    def option(self) -> str:
        return "--" + self.keyword.replace("_", "-")


FLAGS: tuple[Flag, ...] = (
    Flag("detection_threshold", "decode", "detection_threshold", "0..1",
         "min joint heatmap score of a joint candidate"),
    Flag("tag_threshold", "decode", "tag_threshold", "DIST", "max tag distance for a joint to join a person, > 0"),
    Flag("min_person_score", "decode", "min_person_score", "0..1",
         "leave out people scoring below this (0: every person found)"),
)


def section_class(section: str) -> type:
    """The dataclass whose fields `section` holds."""
    module, name = SECTIONS[section]
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Settings:
    decode: DecodeConfig
    tracker: TrackerConfig

    def to_dict(self) -> dict:
        return {"decode": asdict(self.decode), "tracker": asdict(self.tracker)}


# ---------------------------------------------------------------- the one resolver


def resolve_settings(stored: Values | None = None, layers: Sequence[Layer] = (),
                     stored_origin: str = "checkpoint settings") -> Settings:
    """The effective settings: the defaults, then `stored` (the model's, read leniently), then each of `layers`
    in order. Each layer is checked as it is applied, so an error names the layer that caused it."""
    settings = Settings(**{section: section_class(section)() for section in SECTIONS})
    for origin, values, lenient in [(stored_origin, stored or {}, True), *((o, v, False) for o, v in layers)]:
        checked = _checked_values(origin, values, lenient)
        try:
            settings = Settings(**{section: replace(getattr(settings, section), **checked.get(section, {}))
                                   for section in SECTIONS})
            check_ranges(settings)
        except (ValueError, TypeError) as error:
            raise UserFacingError(f"{origin}: {error}") from None
    return settings


def check_ranges(settings: Settings) -> None:
    """The ranges where a value means something, beyond what the dataclasses refuse because it would break them
    (`DecodeConfig.__post_init__`, `TrackerConfig.__post_init__`): scores are within 0..1. Raises ValueError."""
    for name in ("detection_threshold", "min_person_score"):
        value = getattr(settings.decode, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"decode.{name} must be between 0 and 1 (a heatmap / person score), got {value}")


# ---------------------------------------------------------------- the layers a user gives


def user_layers(config: str | Path | None = None, flags: Mapping[str, Any] | None = None,
                assignments: Sequence[str] = (), keywords: bool = False) -> list[Layer]:
    """The layers above the model's stored settings, lowest first: `--config FILE` (read here), the named flags
    (`FLAGS` keyword -> value; None: not given), `--set` assignments. keywords: name a flag's layer by its API
    keyword (`detection_threshold`) instead of its option (`--detection-threshold`)."""
    layers: list[Layer] = []
    if config is not None:
        layers.append((f"--config {config}", read_settings_file(config)))
    given = flags or {}
    for flag in FLAGS:
        value = given.get(flag.keyword)
        if value is not None:
            layers.append((flag.keyword if keywords else flag.option, {flag.section: {flag.name: value}}))
    if assignments:
        layers.append(("--set", parse_assignments(assignments)))
    return layers


def parse_assignments(assignments: Sequence[str], origin: str = "--set") -> Values:
    """`["decode.top_k=20", "tracker.tag_gate=1.0"]` -> `{"decode": {"top_k": "20"}, ...}` (text values,
    converted by `resolve_settings`)."""
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
    return recorded_settings(values, f"--config {path}")


def recorded_settings(values: object, origin: str) -> Values:
    """The settings sections of a record a run wrote (a settings file, the JSON Lines header): the run's
    description (RUN_RECORD_KEYS) left out, a section written as null (no tracking) left out."""
    if not isinstance(values, dict):
        raise UserFacingError(f"{origin}: expected sections {', '.join(SECTIONS)}, got {type(values).__name__}")
    return {section: section_values for section, section_values in values.items()
            if section not in RUN_RECORD_KEYS and not (section in SECTIONS and section_values is None)}


# ---------------------------------------------------------------- names and values


def _checked_values(origin: str, values: Values, lenient: bool = False) -> Values:
    """`values` with every section and field name known and every value of its field's type.
    lenient (a model's stored settings): unknown names are logged and skipped."""
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
        dataclass_type = section_class(section)
        hints = get_type_hints(dataclass_type)
        known = [f.name for f in fields(dataclass_type)]
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


def _convert(hint: Any, value: Any) -> Any:
    """`value` (text from the command line, or a JSON / TOML / Python value) as the field's type."""
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
