"""Running `ip` and `tc`: argument lists only, errors that quote the command and its stderr.

Every change the lab makes to the kernel goes through ``run_command``, so a failure
always reports exactly which command failed and what the kernel said, instead of a bare
``CalledProcessError``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from globetrain.netlab.errors import LabError

# A single ip/tc call finishes in milliseconds; a hung one (a stuck netlink socket) must
# not hang a test run or a cleanup.
COMMAND_TIMEOUT_S = 20.0


def run_command(argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Run ``argv`` (no shell) and return its stdout; raise ``LabError`` if it fails and ``check``."""
    try:
        completed = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as error:
        raise LabError(
            f"`{argv[0]}` is not installed; the network lab needs iproute2 (`ip`, `tc`): "
            "install the iproute2 package"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from error
    if check and completed.returncode != 0:
        raise LabError(
            f"`{' '.join(argv)}` failed (exit {completed.returncode}): {completed.stderr.strip()}"
        )
    return completed.stdout


def run_json(argv: Sequence[str]) -> Any:
    """Run an ``ip -json``/``tc -json`` command and parse its output (empty output is ``[]``)."""
    output = run_command(argv).strip()
    if not output:
        return []
    try:
        return json.loads(output)
    except json.JSONDecodeError as error:
        raise LabError(f"`{' '.join(argv)}` printed output that is not JSON: {output[:200]!r}") from error


def tool_path(name: str) -> str | None:
    """Where ``name`` lives, also in /sbin and /usr/sbin (not on every user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
