"""The ``compression`` config section: the codec's settings for a run."""

from __future__ import annotations

import dataclasses
from typing import Literal

from globetrain.compression.codec import DEFAULT_MAX_ELEMENTS, Codec, validate_codec_settings
from globetrain.config import ConfigSection, field


@dataclasses.dataclass(frozen=True)
class CompressionConfig(ConfigSection):
    """Spatial compression of each round's update (the adaptive schedule may change
    density and bits per round; these are the starting values)."""

    density: float = field(0.01, help="fraction of each tensor's elements sent per round (0, 1]")
    bits: Literal[2, 4, 8, 16, 32] = field(
        8, help="bits per sent value: 2, 4, 8 quantized; 16 float16; 32 float32 (lossless)"
    )
    max_elements: int = field(
        DEFAULT_MAX_ELEMENTS, help="largest total number of elements a received payload may declare"
    )
    error_feedback: bool = field(True, help="keep what was not sent and add it to the next round")

    def __post_init__(self) -> None:
        validate_codec_settings("compression", self.density, self.bits, self.max_elements)

    def build_codec(self) -> Codec:
        return Codec(self.density, self.bits, max_elements=self.max_elements)
