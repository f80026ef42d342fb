"""globetrain: train one model on thousands of IoT devices across the internet.

The parts (see docs/ and the design notes):

- ``globetrain.compression``: the spatial step of the two-step deep compression
  (top-k, low-bit quantization, index coding, wire format, error feedback).
- ``globetrain.sync``: the temporal step (local steps, pseudo-gradients, outer
  optimizer, delayed application) behind an asynchronous exchange interface.
- ``globetrain.video``: the video case study (synthetic dataset, loader, clip cache,
  TSM models, training and classification).
- ``globetrain.fleet``: the real runtime over hivemind.
- ``globetrain.sim``: the fleet simulator.
"""

__version__ = "0.1.0"
