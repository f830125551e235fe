"""Run one preparation job per scan or room, in parallel processes, with progress (`ppkt.progress`) and per-job errors."""
from __future__ import annotations

from concurrent.futures import as_completed
from typing import Callable, Iterator, Sequence, Tuple, TypeVar, Union

from ppkt.pool import process_pool
from ppkt.progress import Progress

T = TypeVar("T")
#: failures of one scan that leave the others going: bad input (FrameError, SceneError and other ValueErrors),
#: missing or unreadable files (OSError)
JOB_ERRORS = (ValueError, OSError)


def run_jobs(fn: Callable[..., dict], items: Sequence[T], *args, workers: int = 1, desc: str = "prepare",
             progress: bool = True) -> Iterator[Tuple[T, Union[dict, Exception], Progress]]:
    """Yield (item, fn(item, *args) or the error it raised, Progress) as jobs finish.

    The Progress has counted the job already; the caller prints messages with its `write` (stderr, on their own
    line) and a progress line with its `report`. A job failing with one of JOB_ERRORS is yielded as its error;
    anything else (a bug, Ctrl-C) stops the run.
    """
    with Progress(len(items), desc, unit="scan", enabled=progress) as bar:
        if workers <= 1:
            for item in items:
                try:
                    result = fn(item, *args)
                except JOB_ERRORS as err:
                    result = err
                bar.update(1)
                yield item, result, bar
        else:
            with process_pool(workers) as pool:
                jobs = {pool.submit(fn, item, *args): item for item in items}
                for job in as_completed(jobs):
                    try:
                        result = job.result()
                    except JOB_ERRORS as err:
                        result = err
                    bar.update(1)
                    yield jobs[job], result, bar
