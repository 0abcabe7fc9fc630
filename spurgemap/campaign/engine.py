"""Dask distributed for campaign work: a LocalCluster on this machine, or an existing scheduler.

Nothing here schedules work itself: Dask places tasks, retries those of workers that died, and
serves its dashboard. Tasks receive paths and a config dump; workers open the files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dask
from distributed import Client, LocalCluster

from spurgemap.core.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Engine:
    client: Client
    workers: int
    dashboard: str | None  # None when the dashboard is not served (bokeh missing)
    local: bool


def default_workers(gpus: int = 0) -> int:
    """One worker per GPU when there are GPUs, else one per two cores (threads split among them)."""
    if gpus:
        return gpus
    return max(1, (os.cpu_count() or 2) // 2)


def worker_environ(cores: int) -> dict[str, int | None]:
    """What Dask's nanny sets before it starts a worker, changed for this work.

    Its default MALLOC_TRIM_THRESHOLD_ (64 KiB) switches off glibc's adaptive mmap threshold, so every
    batch array is a fresh mmap with page faults: mapping ran ~10 % slower in a worker than in
    process (benchmarks/scale_bench.py); None unsets it. Its OMP/MKL/OpenBLAS default of 1 thread
    would leave torch (evaluate cells) on one core of the worker's share.
    """
    return {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": cores, "MKL_NUM_THREADS": cores,
            "OPENBLAS_NUM_THREADS": cores}


def _dashboard_served() -> bool:
    try:
        # Deferred: bokeh is optional; it only decides whether a dashboard address is printed.
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def dask_engine(workers: int | None = None, scheduler: str | None = None, gpus: int = 0,
                one_task_per_worker: bool = False) -> Iterator[Engine]:
    """A client on `scheduler` (workers must see the same paths), else on a LocalCluster of processes."""
    served = _dashboard_served()
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({type(exc).__name__}); start "
                             "`dask scheduler` there and check the address and port") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            if n == 0:
                log.info("waiting for a worker to join %s", scheduler)
                client.wait_for_workers(1, timeout=120)
                n = len(client.scheduler_info().get("workers", {}))
            yield Engine(client, n, client.dashboard_link if served else None, local=False)
        finally:
            client.close()
        return
    n = workers or default_workers(gpus)
    if n < 1:
        raise InputError(f"--workers {n}: give at least 1")
    cores = max(1, (os.cpu_count() or 1) // n)
    threads = 1 if one_task_per_worker else cores
    # Dask's statistical profiler samples every task thread each 10 ms: ~4 % of a mapping task on
    # 2 cores (benchmarks/scale_bench.py); the dashboard loses its profile pane, nothing else.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ(cores),
                          "distributed.worker.profile.enabled": False}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                               dashboard_address=":0" if served else None, silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield Engine(client, n, client.dashboard_link if served else None, local=True)
    finally:
        client.close()
        cluster.close()
