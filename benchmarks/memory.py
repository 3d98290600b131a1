"""Peak resident memory of a pipeline process: its Python driver, its JVM, its Python workers.

A thread polls the process tree with psutil. Peaks between two samples are missed, so the
numbers are lower bounds; at the default 0.2 s interval a run of minutes gives thousands of
samples, and the heaps that matter (the JVM's, a collected DataFrame) grow for longer than that.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import psutil

MB = 10**6
DEFAULT_INTERVAL_S = 0.2


@dataclass
class MemoryPeaks:
    """Highest resident set sizes seen, in MB (10^6 bytes)."""

    driver_mb: float = 0.0  # the Python process that runs the pipeline
    jvm_mb: float = 0.0  # its java child (the Spark driver JVM, executors too in local mode)
    workers_mb: float = 0.0  # every Python descendant together (leak scan, GX, pyspark's)
    total_mb: float = 0.0  # the whole tree at one moment
    samples: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {key: round(value, 1) for key, value in asdict(self).items()}


def _is_jvm(process: psutil.Process) -> bool:
    return process.name() in ("java", "java.exe")


def _is_python(process: psutil.Process) -> bool:
    return process.name().lower().startswith("python")


def tree_rss(root: psutil.Process) -> tuple[float, float, float]:
    """(driver, JVM, Python workers) resident MB of a process and its descendants right now.

    Other descendants are left out: they are the JVM's short-lived helpers (Hadoop runs
    `chmod` and `stat` through a shell where its native library is missing), which, until
    they exec, share the JVM's pages and would show its whole size a second time (seen: a
    10,000-patient run's "workers" at 10.6 GB for one sample)."""
    driver = root.memory_info().rss / MB
    jvm = others = 0.0
    for child in root.children(recursive=True):
        try:
            rss = child.memory_info().rss / MB
            if _is_jvm(child):
                jvm += rss
            elif _is_python(child):
                others += rss
        except psutil.NoSuchProcess:  # a worker that exited between listing and reading
            continue
    return driver, jvm, others


class PeakSampler:
    """Samples a process tree in a background thread until stopped (or the process ends)."""

    def __init__(self, pid: int, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._root = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)
        self.peaks = MemoryPeaks()

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def stop(self) -> MemoryPeaks:
        self._stop.set()
        self._thread.join()
        return self.peaks

    def _loop(self) -> None:
        # Sample first, then wait: even a process stopped at once is sampled one time.
        while True:
            try:
                self._record(*tree_rss(self._root))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                return  # the pipeline has exited: nothing more to see
            if self._stop.wait(self._interval_s):
                return

    def _record(self, driver: float, jvm: float, others: float) -> None:
        peaks = self.peaks
        peaks.driver_mb = max(peaks.driver_mb, driver)
        peaks.jvm_mb = max(peaks.jvm_mb, jvm)
        peaks.workers_mb = max(peaks.workers_mb, others)
        peaks.total_mb = max(peaks.total_mb, driver + jvm + others)
        peaks.samples += 1
