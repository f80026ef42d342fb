"""Validation under real network conditions, faults and hostile input (issue 6).

Shaped network and faults (docs/validation.md):

- ``shaped`` (``python -m globetrain.validation.shaped``): the fleet in a network lab,
  two-step and dense, shaped and unshaped; ``shaped_case``, ``shaped_report``;
- ``faults`` (``python -m globetrain.validation.faults``): kills, restarts, a full disk and a
  stopped device during a run; ``fault_plan``, ``fault_injection``, ``faults_report``;
- shared pieces: ``lab_run`` (the demo's run with round-0 hooks), ``fleet_in_lab`` (peers
  placed in namespaces behind their relays, counter sampling), ``lab_profiles`` (profile
  cuts), ``accounting`` (the reported numbers, pure).
"""
