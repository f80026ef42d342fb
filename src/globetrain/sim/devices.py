"""Device classes: how fast each kind of mid-sized IoT device trains a model, and its memory.

Speeds are derived, never invented: this machine's measured training throughput of the
real model (clips/s, ``globetrain.video.models.measure_training_throughput``) is scaled
by the ratio of a published dense linear-algebra measurement of the device (HPL Linpack,
Gflops, the same kind of GEMM-bound work as convolution training) to the same kind of
measurement taken on this machine side by side with the throughput (a float64 GEMM,
``reference.MachineReference``). So

    device clips/s = this machine's clips/s x device HPL Gflops / this machine's GEMM Gflops

Both numbers of this machine come from one run (a ratio measured side by side, robust to
the machine being shared). Devices that train on a GPU (the Jetsons) have no published
HPL figure; for them the HPL-equivalent is the datasheet FP32 peak of the GPU times a
utilisation that is an assumption, flagged as such in ``source``. ``globetrain simulate
calibrate`` replaces all of this with a fit to a real run when one exists.
"""

from __future__ import annotations

import dataclasses

from globetrain.config import ConfigSection, field, require
from globetrain.errors import ConfigError

GEERLING_HPL = "https://github.com/geerlingguy/top500-benchmark (README results table, HPL Linpack)"


@dataclasses.dataclass(frozen=True)
class DeviceClass(ConfigSection):
    """One kind of device: its compute (as an HPL-equivalent) and memory."""

    name: str = field(help="short name used in fleet profiles, e.g. 'raspberry-pi-4'")
    description: str = field(help="what the device is")
    hpl_gflops: float = field(
        help="dense linear-algebra throughput (HPL Linpack Gflops, whole device) that scales this machine's speed"
    )
    memory_gb: float = field(help="RAM of the common configuration, GB")
    source: str = field(help="where hpl_gflops and memory_gb come from")

    def __post_init__(self) -> None:
        section = f"device[{self.name}]"
        require(isinstance(self.name, str) and self.name != "", section, "name", self.name, "a non-empty name")
        require(self.hpl_gflops > 0, section, "hpl_gflops", self.hpl_gflops, "a number > 0")
        require(self.memory_gb > 0, section, "memory_gb", self.memory_gb, "a number of GB > 0")
        require(bool(self.source.strip()), section, "source", self.source, "where the numbers come from")


# GPU FP32 peak x this share is the HPL-equivalent of the Jetsons. An assumption: small-batch
# training of a 0.3M-parameter model keeps a small embedded GPU mostly idle (kernel launch
# and memory bound); calibration against a real run is what should replace it.
JETSON_GPU_UTILISATION = 0.1

DEVICE_CLASSES: dict[str, DeviceClass] = {
    device.name: device
    for device in (
        DeviceClass(
            name="raspberry-pi-4",
            description="Raspberry Pi 4 Model B, 4x Cortex-A72, 4 GB",
            hpl_gflops=11.889,
            memory_gb=4.0,
            source=f"HPL 11.889 Gflops (Raspberry Pi 4, BCM2711 @ 1.8 GHz), {GEERLING_HPL}; 4 GB: common model",
        ),
        DeviceClass(
            name="raspberry-pi-5",
            description="Raspberry Pi 5, 4x Cortex-A76 @ 2.4 GHz, 8 GB",
            hpl_gflops=30.249,
            memory_gb=8.0,
            source=f"HPL 30.249 Gflops (Raspberry Pi 5, BCM2712 @ 2.4 GHz), {GEERLING_HPL}; 8 GB model",
        ),
        DeviceClass(
            name="jetson-nano",
            description="NVIDIA Jetson Nano 4 GB (128-core Maxwell GPU), training on the GPU",
            hpl_gflops=236.0 * JETSON_GPU_UTILISATION,
            memory_gb=4.0,
            source=(
                "NVIDIA Jetson Nano datasheet: 472 GFLOPS FP16 = 236 GFLOPS FP32 peak, 4 GB; "
                f"x utilisation {JETSON_GPU_UTILISATION} (assumption, see JETSON_GPU_UTILISATION)"
            ),
        ),
        DeviceClass(
            name="jetson-orin-nano",
            description="NVIDIA Jetson Orin Nano 8 GB (1024-core Ampere GPU), training on the GPU",
            hpl_gflops=1280.0 * JETSON_GPU_UTILISATION,
            memory_gb=8.0,
            source=(
                "NVIDIA Jetson Orin Nano 8 GB datasheet: 1024 CUDA cores @ 625 MHz = 1.28 TFLOPS FP32 peak, 8 GB; "
                f"x utilisation {JETSON_GPU_UTILISATION} (assumption, see JETSON_GPU_UTILISATION)"
            ),
        ),
        DeviceClass(
            name="phone-soc",
            description="phone-class SoC board (Rockchip RK3588S: 4x Cortex-A76 + 4x Cortex-A55), 8 GB",
            hpl_gflops=53.333,
            memory_gb=8.0,
            source=f"HPL 53.333 Gflops (Orange Pi 5, RK3588S 8-core), {GEERLING_HPL}; 8 GB model",
        ),
        DeviceClass(
            name="x86-mini-pc",
            description="x86 mini-PC (Intel N100, 4 cores, 16 W class), 16 GB",
            hpl_gflops=37.224,
            memory_gb=16.0,
            source=f"HPL 37.224 Gflops (Radxa X4, 1x N100 @ 3.4 GHz, 16 W), {GEERLING_HPL}; 16 GB: common mini-PC",
        ),
    )
}


def device_class(name: str) -> DeviceClass:
    try:
        return DEVICE_CLASSES[name]
    except KeyError:
        raise ConfigError(f"unknown device class {name!r}; valid device classes are {sorted(DEVICE_CLASSES)}") from None
