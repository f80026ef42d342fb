"""Where a process gets the run key from, and how a new one is kept.

The key is the run's only secret. It is never taken from the command line (other users
of the machine can read command lines in ``ps``): a process reads it from
``GLOBETRAIN_RUN_KEY`` or from a file (``--run-key-file``), and hands it to child
processes through their environment. The bootstrap creates one when none is given and
writes it to a file only its owner can read (mode 0600), printing the path, not the key.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from globetrain.errors import ConfigError
from globetrain.fleet.keys import RUN_KEY_ENV, RunKeys, new_run_key, parse_run_key

log = logging.getLogger(__name__)


def read_run_key_file(path: Path) -> str:
    """The key text in ``path``; warns when others may read the file."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ConfigError(f"run key file {path} does not exist: copy it from the bootstrap's machine, or set {RUN_KEY_ENV}") from None
    except OSError as error:
        raise ConfigError(f"cannot read run key file {path}: {error.strerror or error}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("run key file %s can be read by other users (mode %o): chmod 600 %s", path, stat.S_IMODE(mode), path)
    return text


def write_run_key_file(path: Path, key_text: str) -> None:
    """Create ``path`` readable by its owner only (0600); refuses to overwrite a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; pass it with --run-key-file to reuse that key, or remove it") from None
    with os.fdopen(descriptor, "w") as stream:
        stream.write(key_text + "\n")
    os.chmod(path, 0o600)  # in case the umask was stricter still: exactly owner read/write


def device_run_keys(run_key_file: str | None) -> RunKeys:
    """A joining process's key: ``GLOBETRAIN_RUN_KEY`` if set, else ``--run-key-file``."""
    text = os.environ.get(RUN_KEY_ENV, "")
    if not text and run_key_file:
        text = read_run_key_file(Path(run_key_file))
    if not text:
        raise ConfigError(
            f"no run key: set {RUN_KEY_ENV} to the key the bootstrap created, or pass --run-key-file FILE "
            "(the file the bootstrap wrote)"
        )
    return RunKeys.from_run_key(parse_run_key(text))


def bootstrap_run_keys(run_key_file: str | None, default_file: Path) -> tuple[RunKeys, Path | None]:
    """The bootstrap's key and, when it created one, the file it wrote it to.

    ``GLOBETRAIN_RUN_KEY`` wins; then an existing ``--run-key-file``; otherwise a new key
    is written to ``--run-key-file`` (or ``default_file``) with mode 0600.
    """
    text = os.environ.get(RUN_KEY_ENV, "")
    if text:
        return RunKeys.from_run_key(parse_run_key(text)), None
    path = Path(run_key_file) if run_key_file else default_file
    if run_key_file and path.exists():
        return RunKeys.from_run_key(parse_run_key(read_run_key_file(path))), None
    key_text = new_run_key()
    write_run_key_file(path, key_text)
    return RunKeys.from_run_key(parse_run_key(key_text)), path
