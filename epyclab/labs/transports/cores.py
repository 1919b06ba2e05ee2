"""This machine's cores, and how many threads each local worker's native thread pools may start.

A sweep on ``n`` local worker processes (a local cluster's engines, clean
workers) already uses the cores. If each worker's BLAS, OpenMP or numba
thread pool also started one thread per core, a ``do()`` that multiplies
matrices would run ``n`` times as many threads as there are cores, fighting
for them (oversubscription), and each worker would pay for starting its pool:
numpy's OpenBLAS takes 0.06 CPU-s here to start 2 threads at import, a third
of numpy's import. So each worker starts with the thread-count variables these
libraries read at start-up set to ``cores // n`` (at least 1), as joblib does
for its loky workers (``_prepare_worker_env`` in joblib's
``_parallel_backends.py``, the same variables and the same rule): a variable
the user set in this process's environment is passed on unchanged.

``cores`` is the lab's, not the machine's: a lab of ``n`` workers was given
``n`` cores (``ParallelLab(cores=-1)`` leaves one free), so each worker gets
one thread. joblib divides the machine's cores instead, which on 8 cores gives
``cores=2``'s 2 workers 4 threads each: all 8 cores, not the 2 asked for.

A forked copy of this process (the ``"fork"`` backend's, or one running points
while a local cluster starts) inherits libraries already started in the user's
process: numpy's OpenBLAS has its pool of one thread per core. So the copy sizes
that pool again, and sets the same variables for libraries it loads later
(:func:`share_the_cores`), and ``n`` copies run no more threads than
``n`` clean workers would.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["THREAD_VARIABLES", "machine_cores", "share_the_cores", "worker_thread_env"]

#: The variables native libraries read for the size of their thread pools (joblib's list):
#: OpenMP, OpenBLAS, MKL, BLIS, Apple's Accelerate, numba and numexpr.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_thread_env(workers: int, cores: int | None = None,
                      environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The thread-count variables for each of ``workers`` local worker processes sharing ``cores`` cores.

    Each is ``environ``'s value where it has one (default ``os.environ``: what
    the user set wins), else ``max(cores // workers, 1)``; ``cores`` defaults to
    :func:`machine_cores`. Returns one entry per name of :data:`THREAD_VARIABLES`.
    """
    cores = machine_cores() if cores is None else cores
    environ = os.environ if environ is None else environ
    each = str(max(cores // max(workers, 1), 1))
    return {name: environ.get(name, each) for name in THREAD_VARIABLES}


def share_the_cores(workers: int) -> None:
    """In a forked copy, one of ``workers``: its share of the cores, as a clean worker starts with.

    Sets :data:`THREAD_VARIABLES` as :func:`worker_thread_env` says (what the user set is kept),
    for the libraries ``do()`` loads from now on, and sizes the pools of the BLAS and OpenMP
    libraries the user's process loaded already (numpy's OpenBLAS) as those variables say, as a
    fresh worker's would read them. threadpoolctl finds and sizes them (the library joblib's
    authors keep for this, which knows each library's own call).
    """
    env = worker_thread_env(workers, workers)  # the lab's cores: one per worker (see the module's docstring)
    os.environ.update(env)
    limits = {}
    # threadpoolctl's kinds of pool: BLAS (OpenBLAS, MKL, BLIS alike) and OpenMP.
    for api, name in (("blas", "OPENBLAS_NUM_THREADS"), ("openmp", "OMP_NUM_THREADS")):
        try:
            limits[api] = max(int(env[name]), 1)
        except ValueError:  # not a number: the library itself would ignore it
            continue
    if limits:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=limits)
