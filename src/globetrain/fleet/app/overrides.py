"""``--set SECTION.FIELD=VALUE`` on the command line: any setting of a typed config section.

Values are read as JSON when they parse (numbers, true/false, lists), else as text, and
are checked by the section's own validation when the section is built.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from globetrain.errors import ConfigError


def parse_overrides(assignments: Iterable[str], sections: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["fleet.round_period_s=5", ...]`` -> ``{"fleet": {"round_period_s": 5}}``; unknown sections refused."""
    known = list(sections)
    out: dict[str, dict[str, Any]] = {name: {} for name in known}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        section, dot, name = key.strip().partition(".")
        if not separator or not dot or not name or section not in out:
            raise ConfigError(
                f"--set {assignment!r} is invalid: expected SECTION.FIELD=VALUE with SECTION one of {known}"
            )
        out[section][name] = _parse_value(text.strip())
    return out


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
