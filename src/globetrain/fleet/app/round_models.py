"""Every round's global model, kept by the bootstrap for a per-round accuracy curve.

The bootstrap evaluates the global model every ``eval_every_s`` seconds, on one thread
beside the devices; what happens between two evaluations (a fall and a recovery within
three rounds) is invisible there. With ``bootstrap.round_models`` it writes the global
parameters after each round to ``round-NNNNN.pt`` (plain tensors, 4 bytes a parameter:
1.2 MB a round for the demo's model), and ``python -m globetrain.validation.round_curve``
evaluates them afterwards. A diagnostic: off by default. A full or unwritable folder is
warned about once and stops the keeping; the run goes on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ROUND_MODELS_DIR = "round_models"
_NAME = re.compile(r"round-(\d{5,})\.pt")


class RoundModels:
    """Writes one file per round; a write is atomic (a killed process leaves no partial file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.kept = 0
        self.failed: str | None = None

    def keep(self, round_index: int, parameters: Sequence[torch.Tensor]) -> None:
        if self.failed is not None:
            return
        path = self.folder / f"round-{round_index:05d}.pt"
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save([p.detach() for p in parameters], temporary)  # written out at once: no copy needed
            os.replace(temporary, path)
        except OSError as error:
            self.failed = f"{type(error).__name__}: {error}"
            log.warning("round models: cannot write %s (%s); not keeping further rounds' models", path, self.failed)
            temporary.unlink(missing_ok=True)
            return
        self.kept += 1


def round_model_files(folder: Path) -> Iterator[tuple[int, Path]]:
    """(round, file) of every kept model in ``folder``, in round order."""
    found = []
    for path in Path(folder).glob("round-*.pt"):
        match = _NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return iter(sorted(found))


def load_round_model(path: Path) -> list[torch.Tensor]:
    """The parameters kept in ``path`` (tensors only: no code is unpickled)."""
    values = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(values, list) or not all(isinstance(v, torch.Tensor) for v in values):
        raise ValueError(f"{path} does not hold a list of tensors: not a round model")
    return values
