"""Worker processes: the Python work a run keeps out of its driver (leak scan, GX's judging)."""

from __future__ import annotations

import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest

from omopflow import workers


def test_work_runs_in_another_process_and_its_errors_come_back():
    assert workers.run(os.getpid) != os.getpid()
    with pytest.raises(FileNotFoundError):
        workers.run(os.stat, "/no/such/file")


def test_the_resident_worker_serves_every_call_of_this_process():
    first = workers.run_resident(os.getpid)
    assert first != os.getpid()
    assert workers.run_resident(os.getpid) == first, "its imports are paid once"


def test_a_resident_worker_that_died_fails_its_call_and_is_replaced_at_the_next():
    dead = workers.run_resident(os.getpid)
    os.kill(dead, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        workers.run_resident(os.getpid)
    assert workers.run_resident(os.getpid) not in (dead, os.getpid())
