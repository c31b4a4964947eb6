"""Resume state of a training run: numbered checkpoints written atomically, the newest K kept, every
RNG state captured, and the stop signals (SIGUSR1/SIGTERM) that ask the loop to save and exit.

A checkpoint is one dict (`torch.save`, loaded with `weights_only=True`): model, optimizer,
scheduler, EMA, step, RNG states and whatever the family adds. The data position is the step
itself: the latent dataset derives every batch from (seed, step)."""

from __future__ import annotations

import random
import signal
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.layout import RunFiles
from pipeline.utils.atomic import atomic_path

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def rng_states() -> dict[str, Any]:
    """Every global random state a step may draw from: python, numpy, torch (CPU and each CUDA device)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": position,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["position"], numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(run: RunFiles, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` as the run's checkpoint of `step` (atomically) and delete all but the newest `keep`."""
    path = run.step_checkpoint(step)
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    for _, old in run.step_checkpoints()[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(run: RunFiles) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads, or None. A newest file that does not load (a disk that filled
    up after the rename) is reported and the one before it used: nothing is deleted."""
    if not run.directory.is_dir():
        return None
    for stale in run.directory.glob(".step-*.tmp-*"):  # what a writer killed mid-save left
        stale.unlink(missing_ok=True)
    for step, path in reversed(run.step_checkpoints()):
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except Exception as error:  # noqa: BLE001 (any unreadable file: fall back to the previous one)
            print(
                f"train: checkpoint {path} (step {step}) does not load ({error}); trying the one before",
                file=sys.stderr,
            )
    return None


class StopSignals:
    """While active, SIGUSR1/SIGTERM set `requested` instead of killing the process; the loop saves at
    the next step boundary and exits (SLURM sends one of them before a preemption or the time limit).

    Entered inside another StopSignals (a submitted job guards its whole start-up, see submit.py), it
    takes over a request the outer one already holds: a signal that came while the stage was starting
    still stops the loop, after its first step."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)
            outer = getattr(self._previous[number], "__self__", None)
            if isinstance(outer, StopSignals) and outer.requested and self.requested is None:
                self.requested = outer.requested
        return self

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        self.requested = signal.Signals(number).name

    def __exit__(self, *exc: object) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
