"""The Dask cluster every scaled-out stage submits to: a local one, or one already running.

``compute.scheduler: null`` starts a ``LocalCluster`` of worker processes on this machine
(``compute.workers`` of ``compute.threads_per_worker`` threads). Otherwise the address of a
running scheduler is used. Common ways to start one:

* by hand: ``dask scheduler`` on one machine, ``dask worker tcp://HOST:8786 --nthreads 1`` on
  each worker machine (with this package and its data paths reachable);
* SLURM/PBS: ``dask_jobqueue.SLURMCluster(...).scale(jobs=N)``, then its ``scheduler_address``;
* Kubernetes: the dask-kubernetes operator's ``KubeCluster``, then its scheduler address.

Workers must see the same paths as the client (the run folder on a shared file system) and
the same STAC catalog URLs.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pipeline.config.compute import ComputeConfig
from pipeline.errors import ComputeError
from pipeline.progress import Progress

log = logging.getLogger(__name__)

#: Loggers of distributed that chatter at INFO on every cluster start and stop.
QUIET_LOGGERS = ("distributed", "bokeh", "tornado")


def worker_count(cc: ComputeConfig) -> int:
    """Local workers: ``compute.workers`` or one per CPU core."""
    return (os.cpu_count() or 1) if cc.workers == "auto" else int(cc.workers)


def _quiet() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def open_client(cc: ComputeConfig, *, processes: bool = True) -> Iterator[Any]:
    """A ``distributed.Client`` on a local cluster or on ``cc.scheduler``; closed on exit.

    Args:
        cc: The ``compute`` section.
        processes: Local workers are processes (CPU-bound work: the map); ``False`` makes them
            threads of this process, for I/O-bound work that releases the GIL (the fetch): they
            start in well under a second instead of importing the pipeline in every process.
            Tasks and their arguments are the same either way; ``cc.scheduler`` ignores it.

    Raises:
        ComputeError: the scheduler cannot be reached, or the local cluster cannot start.
    """
    from distributed import Client, LocalCluster

    _quiet()
    if cc.scheduler:
        try:
            client = Client(cc.scheduler, timeout=f"{cc.connect_timeout_s}s")
        except (OSError, TimeoutError) as err:
            raise ComputeError(
                f"cannot reach the Dask scheduler at {cc.scheduler} ({err}). Start one with "
                "`dask scheduler` (and `dask worker <address>`), check compute.scheduler, or set "
                "compute.scheduler: null for a local cluster"
            ) from err
        with client:
            log.info("Dask: scheduler %s, %d workers", cc.scheduler, len(client.nthreads()))
            yield client
        return
    n = worker_count(cc)
    try:
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=cc.threads_per_worker,
            processes=processes,
            memory_limit=cc.memory_limit,
            dashboard_address=":0" if cc.dashboard else None,
            silence_logs=logging.WARNING,
        )
    except (OSError, ValueError, TimeoutError) as err:
        raise ComputeError(
            f"cannot start a local Dask cluster of {n} workers ({err}); lower compute.workers "
            "or compute.memory_limit"
        ) from err
    with cluster, Client(cluster) as client:
        if cc.dashboard:
            log.info("Dask dashboard: %s", client.dashboard_link)
        kind = "process" if processes else "thread"
        log.info(
            "Dask: local cluster of %d %s worker(s) x %d thread(s)", n, kind, cc.threads_per_worker
        )
        yield client


def run_tasks(
    client: Any,
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    *,
    what: str,
    unit: str,
    retries: int,
    on_error: Callable[[int, BaseException], Any] | None = None,
    bar: bool | None = None,
) -> list[Any]:
    """``[fn(*args) for args in calls]`` as Dask tasks on ``client``, with progress as they end.

    Results come back in the order of ``calls`` whatever order the tasks finish in. A task
    that raises (or is lost with its workers) is retried ``retries`` times; then its
    exception is raised here, or, with ``on_error``, ``on_error(index, exception)`` is its
    result and the other tasks go on.

    Args:
        client: A ``distributed.Client``.
        fn: A top-level (picklable) function.
        calls: The arguments of each task (futures allowed, e.g. scattered data).
        what: The progress line's label.
        unit: What one task is (``patches``).
        retries: Retries of a failing task.
        on_error: Turns a failed task into its result instead of raising.
        bar: The progress bar (``None``: when stderr is a terminal).
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    name = getattr(fn, "__name__", "task")
    futures = [
        client.submit(fn, *args, key=f"{name}-{i}-{token}", retries=retries)
        for i, args in enumerate(calls)
    ]
    position = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(futures)
    with Progress(what, len(futures), unit, bar=bar) as progress:
        for fut in as_completed(futures):
            i = position[fut.key]
            if fut.status == "finished" or on_error is None:
                results[i] = fut.result()
            else:
                err = fut.exception() if fut.status == "error" else None
                results[i] = on_error(i, err or RuntimeError(f"Dask task {fut.status}"))
            progress.update()
    return results
