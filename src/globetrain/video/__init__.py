"""The video case study: globally distributed training and classification of video.

The synthetic dataset:
- ``actions``, ``scenes``: eight motion classes in mirror pairs; how a clip is drawn.
- ``synth``: ``generate(out_dir, ...)`` writes them as H.264 MP4 files with split files.

Any folder of videos, to the model's input:
- ``files``: ``read_video`` / ``write_video`` (PyAV); every bad file is ``UnreadableVideo``.
- ``dataset``: ``load_dataset(root)`` (folder-per-class or split files), checked at start.
- ``sharding``: ``shard(samples, device_index, num_devices, mode)``, one device's part.
- ``cache``: ``ClipCache``, decoded uint8 frames in memory-mapped shards, size-capped.
- ``frame_source``: ``FrameSource``, a video's frames from the cache or a decode.
- ``clips``: TSN segment sampling and normalisation.
- ``loader``: ``ClipLoader``, batches with background prefetch.

Models and runs:
- ``models``: TSM-small and its baselines in a registry, with FLOPs and measured speed.
- ``config``: the settings (``VideoConfig`` = model + data + train), saved in checkpoints.
- ``training``: optimizer, schedule, metrics log, checkpoint of a run.
- ``evaluation``: ``evaluate(model, loader)``: accuracy and loss.
- ``trained_model``, ``classify``: a checkpoint back to a model; labels for files.
- ``plots``: the PNGs next to the JSON results.

Nothing heavy is imported here, so a process that needs one part (the synth workers,
the simulator's model profiles) loads only that part.
"""
