"""The fault-injection hook itself: silent unless asked, and it dies the way it is asked to."""

from __future__ import annotations

import subprocess
import sys

import pytest

from omopflow.faults import FAIL_AT_VARIABLE, FAIL_MODE_VARIABLE, InjectedFault, checkpoint


def test_nothing_happens_without_the_variable():
    checkpoint("staging", env={})


def test_another_stage_does_not_fire():
    checkpoint("staging", env={FAIL_AT_VARIABLE: "publishing", FAIL_MODE_VARIABLE: "raise"})


def test_raise_mode_raises_at_the_named_stage():
    env = {FAIL_AT_VARIABLE: "mapping", FAIL_MODE_VARIABLE: "raise"}
    with pytest.raises(InjectedFault, match="'mapping'"):
        checkpoint("mapping", env=env)


def test_a_typo_in_the_variable_is_an_error_not_a_survived_crash():
    with pytest.raises(ValueError, match="OMOPFLOW_FAIL_AT='stagign'"):
        checkpoint("staging", env={FAIL_AT_VARIABLE: "stagign"})


def test_an_unknown_stage_in_the_code_is_an_error():
    with pytest.raises(ValueError, match="unknown fault stage"):
        checkpoint("lunch", env={})


def test_kill_mode_is_a_real_sigkill():
    script = (
        "from omopflow.faults import checkpoint\n"
        "checkpoint('publishing', env={'OMOPFLOW_FAIL_AT': 'publishing'})\n"
        "print('survived')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -9
    assert "survived" not in done.stdout
