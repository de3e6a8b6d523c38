"""Moved to `model/settings.py` (issue 28: settings are resolved below training and realtime).

Kept only for `training/recipes/default_model.py`, which imports `build_settings` and `parse_assignments` from
here; once it imports `resolve_settings` from `tagtrack.model.settings`, delete this module. Nothing else may
import it.
"""

from __future__ import annotations

from collections.abc import Sequence

from tagtrack.model.settings import Layer, Settings, parse_assignments, resolve_settings

__all__ = ["build_settings", "parse_assignments"]


def build_settings(layers: Sequence[Layer], lenient_first: bool = False) -> Settings:
    """The old signature over `resolve_settings`: with lenient_first, the first layer is the model's stored one."""
    if lenient_first and layers:
        (origin, stored), *above = layers
        return resolve_settings(stored, above, stored_origin=origin)
    return resolve_settings(None, layers)
