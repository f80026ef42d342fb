"""Closing every open lab when the process ends: normally, on SIGINT, on SIGTERM.

``with Lab()`` already closes a lab when its body raises. This module covers the rest:
- atexit: a lab that was never closed (a script without ``with``, an uncaught error);
- SIGTERM: Python's default is to die without unwinding, which would leave namespaces
  behind; here the labs are closed first, then the signal is re-delivered with its
  default action, so the process still ends by SIGTERM as its parent expects;
- SIGINT: labs are closed, then Python's own handler raises KeyboardInterrupt as usual.
A signal that arrives while a lab is being closed on the main thread is held until that
close finished, so a second Ctrl+C cannot cut a cleanup in half.

SIGKILL cannot be caught: ``state.cleanup_stale`` removes what such a run leaves.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, Protocol

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Closable(Protocol):
    def close(self) -> None: ...


_lock = threading.RLock()
_open: dict[int, Closable] = {}
_atexit_registered = False
_previous_handlers: dict[int, Any] = {}
_main_thread_closing = 0
_held_signals: list[int] = []


def register(lab: Closable) -> None:
    """Close ``lab`` at exit and on SIGINT/SIGTERM unless it is closed before."""
    global _atexit_registered
    with _lock:
        _open[id(lab)] = lab
        if not _atexit_registered:
            atexit.register(close_all)
            _atexit_registered = True
        _install_signal_handlers()


def unregister(lab: Closable) -> None:
    with _lock:
        _open.pop(id(lab), None)


def close_all() -> None:
    """Close every registered lab; one failing close does not stop the others."""
    with _lock:
        labs = list(_open.values())
    for lab in labs:
        try:
            lab.close()
        except Exception:  # noqa: BLE001 - best effort at exit; the error is logged
            logger.exception("closing a network lab failed; `python -m globetrain.netlab cleanup` removes leftovers")


@contextlib.contextmanager
def closing() -> Iterator[None]:
    """Mark a close in progress: signals arriving on the main thread meanwhile are held."""
    global _main_thread_closing
    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        _main_thread_closing += 1
    try:
        yield
    finally:
        if on_main:
            _main_thread_closing -= 1
            if _main_thread_closing == 0 and _held_signals:
                signum = _held_signals.pop(0)
                _held_signals.clear()
                _handle_signal(signum, None)


def _install_signal_handlers() -> None:
    # Python only lets the main thread set handlers; labs opened on other threads rely
    # on atexit and on cleanup_stale.
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED_SIGNALS:
        current = signal.getsignal(signum)
        if current is _handle_signal or current == signal.SIG_IGN or current is None:
            continue  # ours already; or the process chose to ignore it; or set from C
        _previous_handlers[signum] = current
        signal.signal(signum, _handle_signal)


def _handle_signal(signum: int, frame: FrameType | None) -> None:
    if _main_thread_closing:
        _held_signals.append(signum)
        return
    close_all()
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    # Default action: die by this very signal, as the parent process expects.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
