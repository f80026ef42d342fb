"""The fleet simulator: thousands of IoT devices across the world, in simulated time.

It drives the same code as the real fleet (each simulated device has its own
``SyncLoop``, whose exchange is a ``SimExchange`` resolved in simulated time; leaders
average and re-encode with the fleet's aggregation code) on real training math (a small
proxy model, stacked and batched across devices), while every transfer is sized with the
real video model's payloads and timed on each device's own links.

Public API:

- ``SimulationConfig`` (``config``) and ``Simulation(config).run() -> SimulationResult`` (``engine``);
- ``write_run`` / ``format_summary`` (``report``): summary.json, curve.csv, devices.csv, plots;
- ``FleetProfile``, ``load_fleet``, ``fleet_names`` (``fleets``); ``DEVICE_CLASSES`` (``devices``);
- ``sim_method`` / ``sim_method_names`` (``methods``): dense-sync, fp16-average, dgc, diloco, two-step;
- ``Sweep`` / ``SweepPlan`` (``sweep``); ``calibrate_and_predict`` (``calibration``);
- ``ring_allreduce`` and ``ring_allreduce_lower_bound`` (``collectives``).
"""

from globetrain.sim.config import SimulationConfig
from globetrain.sim.devices import DEVICE_CLASSES, DeviceClass
from globetrain.sim.fleets import FleetProfile, fleet_names, load_fleet
from globetrain.sim.methods import sim_method, sim_method_names

__all__ = [
    "DEVICE_CLASSES",
    "DeviceClass",
    "FleetProfile",
    "SimulationConfig",
    "fleet_names",
    "load_fleet",
    "sim_method",
    "sim_method_names",
]
