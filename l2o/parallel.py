"""Where work runs: one torch thread per worker, a local process pool, Dask distributed.

Every parallel command of the package (the tuning, the figure grid, the GPS studies,
GPS's sampled rollouts) takes its workers here, so that they share one rule: **a worker
computes with one torch thread**.  Float results of matrix products can depend on the
number of threads, and the caches and the tests compare results bit for bit.

* :func:`process_pool`: ``workers`` processes of this machine (forked where the platform
  allows, so that they inherit prepared data and registered optimizers).
* :func:`executor`: a ``concurrent.futures``-style executor by kind: ``"local"`` (this
  process for ``workers <= 1``, else :func:`process_pool`) or ``"dask"`` (a Dask
  ``LocalCluster`` of single-threaded worker processes on the loopback interface, or the
  scheduler at an address such as ``tcp://host:8786``).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
from typing import Any

import torch

log = logging.getLogger(__name__)

#: Kinds of :func:`executor`.
EXECUTORS = ("local", "dask")

#: What :func:`init_worker` hands to the tasks of a pool (the tuning's problem).
WORKER: dict[str, Any] = {}


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def init_worker(problem=None) -> None:
    """Pool initializer: one thread per worker (float results depend on it)."""
    torch.set_num_threads(1)
    WORKER["problem"] = problem


def process_pool(workers: int, initargs=()) -> cf.ProcessPoolExecutor:
    """``workers`` single-threaded processes; ``initargs`` go to :func:`init_worker`."""
    methods = multiprocessing.get_all_start_methods()
    # fork: workers inherit registered optimizers and prepared data; elsewhere spawn.
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                  initializer=init_worker, initargs=initargs)


@contextlib.contextmanager
def executor(kind: str = "local", workers: int = 2, scheduler: str | None = None):
    """A ``concurrent.futures`` executor of ``kind`` (``None``: run in this process).

    ``"dask"`` connects to ``scheduler`` or, without one, starts a ``LocalCluster`` of
    ``workers`` single-threaded processes on the loopback interface; it closes what it
    started on exit.

    Raises:
        ValueError: an unknown ``kind``, ``workers < 1``, or a ``scheduler`` with
            ``kind="local"``.
    """
    if kind not in EXECUTORS:
        raise ValueError(f"Invalid executor: {kind!r} (expected one of {EXECUTORS})")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Invalid workers: {workers!r} (a positive integer)")
    if scheduler is not None and kind != "dask":
        raise ValueError("a scheduler address needs the dask executor")
    if kind == "local":
        if workers <= 1:
            yield None
            return
        with process_pool(workers) as pool:
            yield pool
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - distributed is in requirements.txt
        raise RuntimeError("the dask executor needs the packages dask and distributed: "
                           "pip install -r requirements.txt") from exc

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        log.info("Dask: %s", client)
        yield client.get_executor(pure=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
