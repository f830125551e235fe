"""results.json of a benchmark: one record per run, with every setting that produced it and its scores.

A record is reused only when a new request has exactly the same settings (the run's whole config and the content
hash of each input file, `ppkt.train.run_dir.run_settings`); any difference replaces it by a new run. The file is
rewritten atomically after every run, so a stopped benchmark keeps what it finished.
"""
from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from ppkt.atomic import write_json
from ppkt.errors import UserError

FORMAT = "ppkt-benchmark-results"


class Results:
    """The records of `path` (created empty when missing), keyed by run name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: Dict[str, dict] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError as err:
                raise UserError(f"{self.path}: not valid JSON ({err}); move it away to start the benchmark afresh")
            if data.get("format") != FORMAT:
                raise UserError(f"{self.path}: not a ppkt benchmark results file (format {data.get('format')!r})")
            self.records = {r["name"]: r for r in data["runs"]}

    def get(self, name: str, settings: Mapping[str, Any]) -> Optional[dict]:
        """The record of run `name` if it was made with exactly `settings`, else None."""
        record = self.records.get(name)
        return record if record is not None and record["settings"] == json.loads(json.dumps(settings)) else None

    def run(self, name: str, settings: Mapping[str, Any], work: Callable[[], dict], **labels: Any) -> dict:
        """The record of `name`: reused when its settings match, else `work()` (returning the scores) is run and
        recorded with `labels` (cell, init, seed, ...) and saved."""
        record = self.get(name, settings)
        if record is None:
            scores = work()
            record = {"name": name, **labels, "settings": json.loads(json.dumps(settings)), **scores}
            self.records[name] = record
            self.save()
        return record

    def save(self) -> None:
        write_json(self.path, {"format": FORMAT, "runs": list(self.records.values())})

    def select(self, **labels: Any) -> List[dict]:
        """Records whose labels equal all of `labels`, in insertion order."""
        return [r for r in self.records.values() if all(r.get(k) == v for k, v in labels.items())]


def wall_minutes(records: List[dict]) -> float:
    """Wall-clock minutes the records' runs cover: the union of their [finished - seconds, finished] spans (runs made
    side by side count once; a stopped and resumed benchmark counts only its working time)."""
    spans = sorted((end - r["seconds"], end) for r in records if "finished" in r and "seconds" in r
                   for end in [datetime.fromisoformat(r["finished"]).timestamp()])
    total, reach = 0.0, -math.inf
    for start, end in spans:
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total / 60
