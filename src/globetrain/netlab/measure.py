"""Measured transfers between lab hosts, directly or through a delay relay.

Used by the lab's integration tests and by ``python -m globetrain.netlab calibrate``:
start a probe sink in one host, optionally a relay in front of it, a probe source in
another host, and collect both sides' numbers plus the source's interface counters.
Every process is started through ``Host.popen``, so the lab ends it if anything fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from globetrain.netlab.errors import LabError
from globetrain.netlab.lab import Host
from globetrain.netlab.relay import relay_command
from globetrain.netlab.relay_control import RelayControl

PYTHON = sys.executable


def read_json_line(process: subprocess.Popen, timeout_s: float, what: str) -> dict[str, Any]:
    """The next JSON line ``process`` prints, waiting at most ``timeout_s`` (no polling)."""
    assert process.stdout is not None, "start the process with stdout=subprocess.PIPE"
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise LabError(f"{what} printed nothing within {timeout_s:.0f} s")
    line = process.stdout.readline()
    if not line:
        stderr = process.stderr.read() if process.stderr else ""
        raise LabError(f"{what} exited (code {process.wait()}) without output: {stderr.strip()[-500:]}")
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise LabError(f"{what} printed {line!r}, not a JSON line") from error


@dataclasses.dataclass(frozen=True)
class RunningRelay:
    process: subprocess.Popen
    listen: str
    control: RelayControl

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """SIGTERM the relay; return its final status (its 'stopped' line)."""
        self.process.terminate()
        try:
            return read_json_line(self.process, timeout_s, "relay (stopping)")
        finally:
            self.process.wait(timeout_s)


def start_relay(host: Host, *, target: str, control_dir: Path, port: int = 0, delay_ms: float = 0.0,
                jitter_ms: float = 0.0, seed: int | None = None, timeout_s: float = 20.0) -> RunningRelay:
    """Run a relay in ``host`` listening on its lab address; return once it accepts connections."""
    control = control_dir / f"relay-{host.namespace}-{time.monotonic_ns()}.sock"
    argv = relay_command(listen=f"{host.address}:{port}", target=target, delay_ms=delay_ms,
                         jitter_ms=jitter_ms, control=control, seed=seed, python=PYTHON)
    process = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = read_json_line(process, timeout_s, f"relay in {host.name}")
    return RunningRelay(process=process, listen=ready["listen"], control=RelayControl(control))


@contextlib.contextmanager
def probe_sink(host: Host, *, listen: str, timeout_s: float = 60.0) -> Iterator[tuple[subprocess.Popen, str]]:
    """A probe sink in ``host``; yields (process, bound HOST:PORT) and reaps it afterwards."""
    argv = [PYTHON, "-m", "globetrain.netlab.probe", "sink", "--listen", listen, "--timeout", str(timeout_s)]
    process = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = read_json_line(process, timeout_s, f"probe sink in {host.name}")
        yield process, ready["listen"]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@dataclasses.dataclass(frozen=True)
class Transfer:
    """One measured transfer: application bytes, kernel counter bytes, times in seconds."""

    sent_bytes: int
    received_bytes: int
    one_way_delay_s: float
    transfer_s: float
    source_tx_bytes: int  # the source host's interface counter over the transfer

    @property
    def goodput_mbit(self) -> float:
        return self.received_bytes * 8 / self.transfer_s / 1e6


def run_probe_source(host: Host, connect: str, payload_bytes: int, *, timeout_s: float) -> dict[str, Any]:
    argv = [PYTHON, "-m", "globetrain.netlab.probe", "source", "--connect", connect,
            "--bytes", str(payload_bytes), "--timeout", str(timeout_s)]
    process = host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        output, errors = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise LabError(f"probe source in {host.name} did not finish within {timeout_s:.0f} s") from None
    if process.returncode != 0:
        raise LabError(f"probe source in {host.name} failed (exit {process.returncode}): {errors.strip()[-500:]}")
    return json.loads(output)


def measure_transfer(source: Host, sink: Host, payload_bytes: int, *, relay_delay_ms: float | None = None,
                     relay_jitter_ms: float = 0.0, control_dir: Path | None = None,
                     timeout_s: float = 120.0) -> tuple[Transfer, dict[str, Any] | None]:
    """Send ``payload_bytes`` from ``source`` to ``sink``; through a relay in ``sink`` if a delay is given.

    Returns the transfer and, with a relay, the relay's final status (bytes it forwarded).
    """
    through_relay = relay_delay_ms is not None
    listen = "127.0.0.1:0" if through_relay else f"{sink.address}:0"
    with probe_sink(sink, listen=listen, timeout_s=timeout_s) as (sink_process, sink_address):
        relay = None
        if through_relay:
            if control_dir is None:
                raise ValueError("measure_transfer through a relay needs control_dir for its control socket")
            relay = start_relay(sink, target=sink_address, control_dir=control_dir,
                                delay_ms=relay_delay_ms, jitter_ms=relay_jitter_ms, seed=0)
        try:
            before = source.counters()
            result = run_probe_source(source, relay.listen if relay else sink_address, payload_bytes,
                                      timeout_s=timeout_s)
            after = source.counters()
            sink_process.wait(timeout_s)
        finally:
            relay_status = relay.stop() if relay else None
    report = result["sink"]
    transfer = Transfer(
        sent_bytes=result["sent_bytes"],
        received_bytes=report["received_bytes"],
        one_way_delay_s=report["one_way_delay_s"],
        transfer_s=report["transfer_s"],
        source_tx_bytes=after.since(before).tx_bytes,
    )
    return transfer, relay_status
