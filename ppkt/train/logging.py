"""Metrics of a run: JSON lines (one per logged iteration), TensorBoard scalars, and a loss-curve PNG."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from ppkt.atomic import atomic_path


class MetricsLog:
    """Appends {"iteration": i, ...} records (i = iterations done) to `metrics.jsonl`; on resume from
    iteration `start`, records after it (written after the checkpoint) are dropped."""

    def __init__(self, out_dir: str | Path, start: int = 0):
        self.path = Path(out_dir) / "metrics.jsonl"
        kept = [r for r in read_metrics(self.path) if r["iteration"] <= start] if start else []
        with atomic_path(self.path) as tmp:  # a stop during the rewrite keeps the old records
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.tb = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=start + 1 if start else None)

    def log(self, iteration: int, values: Dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"iteration": iteration, **values}) + "\n")
        for key, value in values.items():
            self.tb.add_scalar(key, value, iteration)

    def close(self) -> None:
        self.tb.close()


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
