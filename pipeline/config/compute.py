"""``compute:`` section: where Dask tasks run. Never part of a stage's config digest: outputs
must not depend on how many machines made them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import Section


class ComputeConfig(Section):
    """The Dask cluster.

    Attributes:
        scheduler: ``null`` starts a ``LocalCluster`` of processes on this machine; else the
            address of a running scheduler (``tcp://10.0.0.5:8786``), e.g. one started with
            ``dask scheduler`` + ``dask worker``, dask-jobqueue on SLURM or dask-kubernetes.
        workers: Worker processes of the local cluster; ``auto`` = one per CPU core.
        threads_per_worker: Threads per local worker; torch in each worker uses as many.
        memory_limit: Memory per local worker (``auto`` splits the machine's memory, or e.g.
            ``4GiB``).
        retries: Times a failed task is retried (a task lost with its worker is rescheduled
            by the scheduler regardless).
        dashboard: Serve the Dask dashboard (on a free port) for a local cluster.
        connect_timeout_s: How long to try to reach ``scheduler``.
    """

    scheduler: str | None = None
    workers: int | Literal["auto"] = "auto"
    threads_per_worker: int = Field(default=1, ge=1, le=256)
    memory_limit: str = "auto"
    retries: int = Field(default=2, ge=0)
    dashboard: bool = False
    connect_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("workers")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"compute.workers {value} must be >= 1 or 'auto'")
        return value
