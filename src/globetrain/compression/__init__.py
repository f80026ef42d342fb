"""The spatial step of the two-step deep compression.

- ``Codec``: top-k sparsification (sampled threshold, no sort), low-bit quantization with
  stochastic rounding and per-chunk scales, Rice or bitmap index coding, and a versioned,
  checksummed, self-describing wire format (``wire``) whose decoder checks every field.
- ``ErrorFeedback``: what was not sent this round is kept and added to the next.
- ``SparseTensorUpdate`` / ``EncodedUpdate``: what a payload carries, as receivers use it.
- ``CompressionConfig``: the typed config section that builds a ``Codec``.
"""

from globetrain.compression.codec import ALLOWED_BITS, DEFAULT_MAX_ELEMENTS, Codec, CodecStats
from globetrain.compression.config import CompressionConfig
from globetrain.compression.error_feedback import ErrorFeedback, ErrorFeedbackStateMismatch
from globetrain.compression.updates import EncodedUpdate, SparseTensorUpdate, TensorEncoding

__all__ = [
    "ALLOWED_BITS",
    "DEFAULT_MAX_ELEMENTS",
    "Codec",
    "CodecStats",
    "CompressionConfig",
    "EncodedUpdate",
    "ErrorFeedback",
    "ErrorFeedbackStateMismatch",
    "SparseTensorUpdate",
    "TensorEncoding",
]
