"""Worker processes that stop with the command: Ctrl-C goes to the main process only (the workers ignore SIGINT), and
a stop -- Ctrl-C, an error -- cancels the jobs not started and terminates the workers at once, instead of waiting for
every queued job (what `with ProcessPoolExecutor()` does)."""
from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Iterator, Optional

from ppkt.errors import RunFailed


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def process_pool(workers: int, start: Optional[str] = None) -> Iterator[ProcessPoolExecutor]:
    """A ProcessPoolExecutor of `workers` processes (started by `start`: "spawn", "fork", or the platform's default)
    that is shut down at once when the block raises (KeyboardInterrupt included): queued jobs cancelled, running
    workers terminated; after a normal exit it waits for its jobs."""
    context = multiprocessing.get_context(start) if start else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_ignore_sigint)
    try:
        try:
            yield pool
        except BrokenProcessPool:
            raise RunFailed("a worker process died while it worked (killed by the system, most often for want of "
                            "memory); try fewer --workers or smaller settings") from None
    except BaseException:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown(wait=True)
