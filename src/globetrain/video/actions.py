"""The action classes of the synthetic dataset: eight motions in four mirror pairs.

The two classes of a pair share one motion; the mirror class plays its frames
backwards (see ``scenes``), so only the order of frames tells them apart.
"""

from __future__ import annotations

import dataclasses

from globetrain.video.scenes import Motion


@dataclasses.dataclass(frozen=True)
class ActionClass:
    name: str
    motion: Motion
    reverse: bool
    """True: the motion's frames are played backwards (the pair's mirror class)."""
    description: str


# Sorted by name, so the folder-per-class order and the class indices agree. Screen
# coordinates have y pointing down, so a growing angle turns clockwise on screen.
ACTION_CLASSES: tuple[ActionClass, ...] = (
    ActionClass("move_down", "translate_y", False, "the shape slides downwards"),
    ActionClass("move_left", "translate_x", True, "the shape slides to the left"),
    ActionClass("move_right", "translate_x", False, "the shape slides to the right"),
    ActionClass("move_up", "translate_y", True, "the shape slides upwards"),
    ActionClass("rotate_ccw", "rotate", True, "the shape turns counter-clockwise in place"),
    ActionClass("rotate_cw", "rotate", False, "the shape turns clockwise in place"),
    ActionClass("zoom_in", "zoom", False, "the shape grows, as if coming closer"),
    ActionClass("zoom_out", "zoom", True, "the shape shrinks, as if moving away"),
)
CLASS_NAMES: tuple[str, ...] = tuple(action.name for action in ACTION_CLASSES)
