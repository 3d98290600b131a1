"""Worker processes for the Python work of a run that needs no Spark: the leak scan's reading
and search, and Great Expectations' judging of the validation gate's summary.

In a worker, that work neither holds the GIL against the driver's threads (which plan and
submit Spark jobs) nor adds its memory to the driver's: Great Expectations alone is about
375 MB once imported, DuckDB's search up to its budget (docs/performance.md).

Workers come from a fork server, never from a fork of this process: the caller is a PySpark
driver, whose JVM child and py4j threads a fork would copy mid-flight. The server is a clean
interpreter, started at the first use and idle until this process ends; it has loaded
pyarrow, pandas (which pyarrow loads on its first array) and DuckDB, so that a worker does
not pay for them. Great Expectations is not preloaded (every leak-scan reader would then
carry it): `run_resident` keeps one worker for it instead, which imports it once.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

T = TypeVar("T")

# "__main__" is the fork server's own default: a caller's main module is loaded once.
PRELOAD = ["__main__", "pyarrow.parquet", "pandas", "duckdb"]


def context() -> multiprocessing.context.BaseContext:
    """The fork server's context, for a process pool of workers."""
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver


def run(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in a new worker, its result (or exception) brought back."""
    with ProcessPoolExecutor(1, mp_context=context()) as pool:
        return pool.submit(function, *args).result()


@functools.cache
def _resident_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(1, mp_context=context())


def run_resident(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in this process's one long-lived worker, for work whose imports
    cost seconds (Great Expectations: about 4 s): they are paid once per process, not per
    call. A worker that died is replaced at the next call."""
    try:
        return _resident_pool().submit(function, *args).result()
    except BrokenProcessPool:
        _resident_pool.cache_clear()
        raise
