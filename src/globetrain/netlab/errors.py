"""The network lab's own error: a step of building, shaping or cleaning the lab failed."""

from __future__ import annotations

from globetrain.errors import GlobetrainError


class LabError(GlobetrainError):
    """Building, shaping or tearing down the lab failed; the message names the step and the fix."""
