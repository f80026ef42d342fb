"""The checkpoint format every part of globetrain writes and reads.

One file holds a trained model and everything needed to use or continue it: the
weights (``model_state``), the model's registry name, the class names in label order,
the fully resolved config (a plain dict), and ``extra`` for a part's own state (the
fleet keeps optimizer and sync state there). A format version and a magic string make
the file self-describing.

Writes are atomic: the payload goes to a temporary file in the same folder, is fsynced,
and replaces the old file with ``os.replace``, so a crash or a full disk mid-write
leaves the previous checkpoint as it was. Reads use ``torch.load(weights_only=True)``:
a checkpoint from elsewhere cannot run code when loaded. That is also why ``extra`` may
hold only plain values (None, bool, int, float, str, lists, tuples, dicts with string
keys) and tensors; ``save_checkpoint`` checks this before writing.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch

from globetrain import __version__
from globetrain.errors import GlobetrainError

FORMAT_VERSION = 1
_MAGIC = "globetrain-checkpoint"


class CheckpointError(GlobetrainError):
    """A checkpoint cannot be read or written; the message says which file and why."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint holds another model, or was trained on different classes."""


@dataclasses.dataclass
class Checkpoint:
    model_name: str
    """Registry name of the model (``globetrain.video.models.build_model``)."""
    class_names: tuple[str, ...]
    """Class names in label order: output i of the model is ``class_names[i]``."""
    model_state: dict[str, torch.Tensor]
    config: dict[str, Any]
    """The fully resolved config of the run that wrote it (``ConfigSection.to_dict``)."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    globetrain_version: str = __version__
    created_at: float = dataclasses.field(default_factory=time.time)
    """Unix time of writing."""


def save_checkpoint(path: Path | str, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (the old file survives any failure)."""
    path = Path(path)
    _check_plain(checkpoint.extra, "extra")
    _check_plain(checkpoint.config, "config")
    payload = {
        "format": _MAGIC,
        "format_version": FORMAT_VERSION,
        "globetrain_version": checkpoint.globetrain_version,
        "created_at": float(checkpoint.created_at),
        "model_name": checkpoint.model_name,
        "class_names": list(checkpoint.class_names),
        "model_state": {name: tensor.detach().cpu() for name, tensor in checkpoint.model_state.items()},
        "config": checkpoint.config,
        "extra": checkpoint.extra,
    }
    temporary: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "wb") as file:
            _serialize(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        temporary = None
        _fsync_folder(path.parent)
    except OSError as error:
        reason = "the disk is full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else (error.strerror or str(error))
        raise CheckpointError(
            f"could not write checkpoint {path}: {reason}; any previous checkpoint there is unchanged"
        ) from error
    except RuntimeError as error:
        # torch's zip writer turns a failed write (a full disk) into a RuntimeError such as
        # "unexpected pos ..." when it closes the archive; the file is incomplete either way.
        raise CheckpointError(
            f"could not write checkpoint {path}: the writer failed ({str(error)[:200]}), most likely a full "
            "disk; any previous checkpoint there is unchanged"
        ) from error
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass


def load_checkpoint(
    path: Path | str,
    *,
    expect_model: str | None = None,
    expect_classes: Sequence[str] | None = None,
) -> Checkpoint:
    """Read a checkpoint; with ``expect_*``, refuse one of another model or other classes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad bytes; all mean the same here
        raise CheckpointError(
            f"{path} is not a readable globetrain checkpoint (corrupt, truncated, or another kind of file): "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from error
    if not isinstance(payload, Mapping) or payload.get("format") != _MAGIC:
        raise CheckpointError(f"{path} is not a globetrain checkpoint (no globetrain header)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, newer than this globetrain reads ({FORMAT_VERSION}); "
            "upgrade globetrain to load it"
        )
    try:
        checkpoint = Checkpoint(
            model_name=str(payload["model_name"]),
            class_names=tuple(str(name) for name in payload["class_names"]),
            model_state=dict(payload["model_state"]),
            config=dict(payload["config"]),
            extra=dict(payload.get("extra") or {}),
            format_version=version,
            globetrain_version=str(payload.get("globetrain_version", "unknown")),
            created_at=float(payload.get("created_at", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} is a damaged globetrain checkpoint: missing or bad field {error}") from error
    check_compatible(checkpoint, path=path, expect_model=expect_model, expect_classes=expect_classes)
    return checkpoint


def check_compatible(
    checkpoint: Checkpoint,
    *,
    path: Path | str = "checkpoint",
    expect_model: str | None = None,
    expect_classes: Sequence[str] | None = None,
) -> None:
    """Raise ``CheckpointMismatch`` if ``checkpoint`` is not of ``expect_model`` and
    ``expect_classes`` (in that order); None skips a check."""
    if expect_model is not None and checkpoint.model_name != expect_model:
        raise CheckpointMismatch(
            f"{path} holds model {checkpoint.model_name!r}, not {expect_model!r}; "
            f"use a checkpoint of {expect_model!r}, or choose model {checkpoint.model_name!r} to use this one"
        )
    if expect_classes is not None and tuple(expect_classes) != checkpoint.class_names:
        expected = tuple(expect_classes)
        missing = [name for name in expected if name not in checkpoint.class_names]
        unexpected = [name for name in checkpoint.class_names if name not in expected]
        if missing or unexpected:
            detail = f"it lacks {missing}" if missing else ""
            if unexpected:
                detail += ("; " if detail else "") + f"it has {unexpected} in addition"
        else:
            detail = "the same names in another order (labels would be mixed up)"
        raise CheckpointMismatch(
            f"{path} was trained on different classes than this dataset: {detail}. "
            f"Checkpoint classes: {list(checkpoint.class_names)}; dataset classes: {list(expected)}"
        )


def _first_line(error: BaseException, limit: int = 120) -> str:
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _serialize(payload: dict[str, Any], file: BinaryIO) -> None:
    """The one place a checkpoint's bytes are produced (tests simulate a full disk here)."""
    torch.save(payload, file)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder for this.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _check_plain(value: Any, where: str) -> None:
    """Refuse values that ``torch.load(weights_only=True)`` would not load back."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint {where}: key {key!r} is a {type(key).__name__}; use str or int keys")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"checkpoint {where} is a {type(value).__name__}; checkpoints hold only plain values "
        "(None, bool, int, float, str, list, tuple, dict) and tensors"
    )
