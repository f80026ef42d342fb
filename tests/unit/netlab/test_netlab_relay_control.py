"""The relay's control requests, applied to a relay that is not listening (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from globetrain.errors import ConfigError
from globetrain.netlab.relay import Relay, RelayConfig, build_parser, config_from_args
from globetrain.netlab.relay_control import handle_request


def answer(*requests: Any, **config: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        relay = Relay(RelayConfig(listen="127.0.0.1:0", target="127.0.0.1:9", **config))
        return [handle_request(relay, request) for request in requests]

    return asyncio.run(run())


def test_status_reports_delays_and_zero_counters() -> None:
    (reply,) = answer({"op": "status"}, forward_delay_ms=40, backward_jitter_ms=5)

    assert reply["ok"] is True
    assert reply["delay"]["forward"] == {"delay_ms": 40.0, "jitter_ms": 0.0}
    assert reply["delay"]["backward"] == {"delay_ms": 0.0, "jitter_ms": 5.0}
    assert reply["stats"]["forward_bytes"] == 0 and reply["stalled"] is False


def test_set_delay_changes_one_or_both_directions() -> None:
    both, forward_only = answer(
        {"op": "set_delay", "delay_ms": 80, "jitter_ms": 10},
        {"op": "set_delay", "direction": "forward", "delay_ms": 160},
    )

    assert both["delay"]["backward"] == {"delay_ms": 80.0, "jitter_ms": 10.0}
    assert forward_only["delay"]["forward"] == {"delay_ms": 160.0, "jitter_ms": 10.0}
    assert forward_only["delay"]["backward"]["delay_ms"] == 80.0


def test_stall_turns_the_relay_stalled_and_drop_reports_zero_without_connections() -> None:
    stalled, dropped = answer({"op": "stall", "seconds": 30}, {"op": "drop", "fraction": 1.0})

    assert stalled["stalled"] is True
    assert dropped == {"ok": True, "dropped": 0}


@pytest.mark.parametrize(
    "request_, error",
    [
        ({"op": "reboot"}, "op = 'reboot' is unknown"),
        ([1, 2], "a request is a JSON object"),
        ({"op": "set_delay", "delay_ms": -1}, "delay_ms = -1.0 is invalid"),
        ({"op": "set_delay", "delay_ms": "slow"}, "delay_ms = 'slow' is invalid"),
        ({"op": "set_delay", "direction": "sideways", "delay_ms": 1}, "direction = 'sideways'"),
        ({"op": "stall", "seconds": 0}, "seconds = 0.0 is invalid"),
        ({"op": "stall"}, "seconds = None is invalid"),
        ({"op": "drop", "fraction": 2}, "fraction = 2.0 is invalid"),
    ],
)
def test_bad_requests_get_an_error_reply_not_an_exception(request_: Any, error: str) -> None:
    (reply,) = answer(request_)

    assert reply["ok"] is False and error in reply["error"]


def test_command_line_options_build_the_config() -> None:
    args = build_parser().parse_args([
        "--listen", "10.213.0.3:7000", "--target", "127.0.0.1:7001", "--delay-ms", "40", "--jitter-ms", "5",
        "--backward-delay-ms", "10", "--stall", "30:5", "--drop", "60:0.5", "--seed", "4",
    ])

    config = config_from_args(args)

    assert (config.forward_delay_ms, config.backward_delay_ms) == (40.0, 10.0)
    assert (config.forward_jitter_ms, config.backward_jitter_ms) == (5.0, 5.0)
    assert config.stalls[0].duration_s == 5.0 and config.drops[0].fraction == 0.5


@pytest.mark.parametrize(
    "extra, field",
    [
        (["--stall", "30"], "--stall '30'"),
        (["--drop", "60:2"], "DropEvent.fraction"),
        (["--delay-ms", "-5"], "RelayConfig.forward_delay_ms"),
        (["--max-pending-bytes", "10"], "RelayConfig.max_pending_bytes"),
    ],
)
def test_bad_command_line_values_name_the_option(extra: list[str], field: str) -> None:
    args = build_parser().parse_args(["--listen", "127.0.0.1:0", "--target", "127.0.0.1:1", *extra])

    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_args(args)
