"""Metrics of a run: JSON lines (one per logged iteration), TensorBoard scalars, and a loss-curve PNG."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from ppkt.atomic import atomic_path


class MetricsLog:
    """Appends {"iteration": i, ...} records (i = iterations done) to the JSON-lines file `path` (and TensorBoard
    scalars to the folder `tensorboard`, if given); on resume from iteration `start`, records after it (written after
    the checkpoint) are dropped."""

    def __init__(self, path: str | Path, start: int = 0, tensorboard: Optional[str | Path] = None):
        self.path = Path(path)
        kept = [r for r in read_metrics(self.path) if r["iteration"] <= start] if start else []
        with atomic_path(self.path) as tmp:  # a stop during the rewrite keeps the old records
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.tb = SummaryWriter(str(tensorboard), purge_step=start + 1 if start else None) if tensorboard else None

    def log(self, iteration: int, values: Dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"iteration": iteration, **values}) + "\n")
        for key, value in values.items():
            if self.tb is not None:
                self.tb.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class IterationTimer:
    """Where the time of training iterations goes, as means over the iterations since the last `report()`:

    ``data_s``: waiting for the batch (from the end of the previous iteration to `batch_ready()`);
    ``step_s``: forward, backward and optimiser step (from `batch_ready()` to `step_done()`);
    ``iteration_s``: their sum. Logging, checkpoints and evaluation between iterations are not counted.
    """

    def __init__(self) -> None:
        self._end = self._ready = time.perf_counter()
        self._data, self._step, self._n = 0.0, 0.0, 0

    def batch_ready(self) -> None:
        self._ready = time.perf_counter()
        self._data += self._ready - self._end

    def step_done(self) -> None:
        self._step += time.perf_counter() - self._ready
        self._n += 1

    def iteration_done(self) -> None:
        self._end = time.perf_counter()

    def report(self) -> Dict[str, float]:
        """The means since the last report, and ``rss_mib``: this process's resident memory now (MiB)."""
        n = max(self._n, 1)
        out = {"data_s": self._data / n, "step_s": self._step / n, "iteration_s": (self._data + self._step) / n,
               "rss_mib": resident_mib()}
        self._data, self._step, self._n = 0.0, 0.0, 0
        return out


def resident_mib() -> float:
    """Resident memory of this process now, in MiB (Linux /proc; 0.0 where it cannot be read)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def read_metrics(path: str | Path) -> List[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path, title: str = "PPKT pretraining", chance: float | None = None,
                    ylabel: str = "PPNCE loss", smooth: bool = False) -> Path:
    """Loss versus iteration from metrics.jsonl, saved as PNG; `chance` draws the log(n) line of an uninformed model.

    smooth=True draws the logged losses faintly ("batch") with, from 10 records on, their running mean over
    max(5, records // 20) records on top.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics(metrics_path) if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    its, loss = [r["iteration"] for r in records], [r["loss"] for r in records]
    if smooth:
        ax.plot(its, loss, lw=0.8, alpha=0.5, label="batch")
        if len(loss) >= 10:
            k = max(5, len(loss) // 20)
            ax.plot(its[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.6, label=f"mean of {k}")
    else:
        ax.plot(its, loss, lw=1.2, label="loss")
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"chance, log n = {chance:.2f}")
    if smooth or chance is not None:
        ax.legend()
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
