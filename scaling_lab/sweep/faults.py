"""Fault injection for tests and ``benchmarks/chaos_sweep.py``: kill or break a trial at a
chosen training step, deterministically, to check that Ray's retries resume it exactly.

Set ``SCALING_LAB_FAULTS`` in the environment of the process that runs ``lab sweep`` (the
driver reads it; the trials get it through their context, wherever Ray runs them)::

    SCALING_LAB_FAULTS="00-base:1:sigkill,01-silu:0:loader:2,02-*:1:raise"

Each entry is ``KEY:EPOCH:KIND[:BATCH]``: in the trial whose key matches ``KEY`` (a glob),
right after batch ``BATCH`` (default 1) of epoch ``EPOCH`` (both from 0) is trained, ``KIND``
strikes: ``sigkill`` kills the trial's process (a lost worker, an OOM kill), ``raise`` raises
from the training loop, ``oom`` raises ``torch.OutOfMemoryError``, ``loader`` raises from the
data loader when it fetches the next batch. An entry fires once: a marker file in the trial
folder (``faults/N.fired``) keeps the retry from meeting it again, so an entry given three
times fails three attempts in a row. Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import fnmatch
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_lab.atomic import atomic_write_text
from scaling_lab.errors import UserError

FAULTS_ENV = "SCALING_LAB_FAULTS"
KINDS = ("sigkill", "raise", "oom", "loader")


class InjectedFaultError(RuntimeError):
    """What ``raise`` and ``loader`` faults raise (a transient error: retried)."""


@dataclass(frozen=True)
class Fault:
    index: int  # position in the variable: names its marker file
    key: str  # glob over trial keys
    epoch: int
    kind: str
    batch: int = 1

    def __str__(self) -> str:
        return f"{self.key}:{self.epoch}:{self.kind}:{self.batch}"


def parse_faults(text: str | None) -> tuple[Fault, ...]:
    """``SCALING_LAB_FAULTS`` -> its faults; a malformed entry is a one-line error."""
    faults = []
    for index, entry in enumerate(e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        try:
            if len(parts) not in (3, 4) or parts[2] not in KINDS:
                raise ValueError
            key, epoch, kind = parts[0], int(parts[1]), parts[2]
            batch = int(parts[3]) if len(parts) == 4 else 1
            if not key or epoch < 0 or batch < 0:
                raise ValueError
        except ValueError:
            raise UserError(
                f"{FAULTS_ENV}: bad entry '{entry}': want KEY:EPOCH:KIND[:BATCH], KIND one of "
                + ", ".join(KINDS)
            ) from None
        faults.append(Fault(index, key, epoch, kind, batch))
    return tuple(faults)


class FaultInjector:
    """The faults of one trial attempt: a step callback for the trainer and, for ``loader``
    faults, a data loader builder that can raise on its next fetch."""

    def __init__(self, faults: tuple[Fault, ...], key: str, folder: Path) -> None:
        self.folder = folder / "faults"
        self.pending = [f for f in faults if fnmatch.fnmatchcase(key, f.key)]
        self.armed = False  # a loader fault: the next train batch fetch raises

    def _fired(self, fault: Fault) -> Path:
        return self.folder / f"{fault.index}.fired"

    @property
    def wants_loader(self) -> bool:
        return any(f.kind == "loader" for f in self.pending)

    def on_step(self, trainer: Any, row: dict[str, Any]) -> None:
        """After every training step: fire the first unfired fault due at this step."""
        for fault in self.pending:
            due = (int(row["epoch"]), int(row["batch"])) == (fault.epoch, fault.batch)
            if not due or self._fired(fault).exists():
                continue
            atomic_write_text(self._fired(fault), f"{fault}\n")  # before: a kill ends us
            self.fire(fault)
            return

    def fire(self, fault: Fault) -> None:
        where = f"injected fault {fault} (epoch {fault.epoch}, after batch {fault.batch})"
        if fault.kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault.kind == "raise":
            raise InjectedFaultError(where)
        elif fault.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"out of memory ({where})")
        else:
            self.armed = True

    def wrap_build(self, build: Callable[..., Any]) -> Callable[..., Any]:
        """``build_dataloader`` whose train loader raises on the fetch after an armed step."""
        injector = self

        def build_faulty(info: Any, split: str, **options: Any) -> Any:
            loader = build(info, split, **options)
            if split != "train":
                return loader
            base = type(loader)

            def __iter__(self: Any) -> Iterator[Any]:  # noqa: N807
                batches = base.__iter__(self)
                while True:
                    if injector.armed:  # armed after a step: the next fetch fails
                        injector.armed = False
                        raise InjectedFaultError("DataLoader: injected fault fetching a batch")
                    try:
                        batch = next(batches)
                    except StopIteration:
                        return
                    yield batch

            loader.__class__ = type(f"Faulty{base.__name__}", (base,), {"__iter__": __iter__})
            return loader

        return build_faulty
