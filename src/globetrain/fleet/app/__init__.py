"""The fleet's process layer: the programs that run on real machines, built on the protocol.

- ``bootstrap``: ``BootstrapRuntime``, the first peer of a run (publishes the run, follows
  and evaluates the global model, shows the fleet); not a master.
- ``device``: ``DeviceRuntime``, one device training the run's model on its own videos.
- ``demo``: ``DemoRun``, a local fleet of separate processes on this machine (the main job).

Their parts, one idea each: ``spec`` (what a video run publishes and what a device checks),
``run_setup`` (a new run's settings), ``local_training`` (a device's inner step),
``qos`` (adaptive H, density and bits on time-based rounds), ``round_metrics`` (one metrics
line per round), ``checkpoints`` (the global model and sync state, atomically),
``names`` (one name per device), ``run_keys`` (where the secret comes from),
``network_options`` (safe defaults, opt-in NAT traversal), ``signals`` (Ctrl+C),
``evaluator`` and ``fleet_view`` (the bootstrap's accuracy and table), and for the demo
``demo_data``, ``demo_presets``, ``processes``, ``demo_monitor``, ``demo_report``.
"""
