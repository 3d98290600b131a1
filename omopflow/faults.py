"""Fault injection: make a run die at a named stage boundary, to prove crashes are harmless.

The pipeline calls `checkpoint("<stage>")` at each boundary. Nothing happens unless
$OMOPFLOW_FAIL_AT names that stage; then the process dies the way the variable
$OMOPFLOW_FAIL_MODE says:

- `kill` (default): SIGKILL to itself, as an operator's `kill -9` or the OOM killer would do.
  No `finally`, no `atexit`, no flush: the on-disk state is exactly what a crash leaves.
- `raise`: raise `InjectedFault`, so a test can stay in one process and reuse its Spark
  session; context managers (the warehouse lock) still unwind.

Stages, in run order (see docs/governance.md, "Fault model"):
- `staging`: this run's staging and quarantine are written; no pointer has moved.
- `mapping`: candidate tables are being written under `build/<run>/`.
- `validation`: the gate and the leak scan have judged the candidate tables.
- `publishing`: the new crosswalk version is written; nothing has been switched.
- `pointers`: `current` and the catalog have switched (the commit); the crosswalk and
  staging pointers have not, and the next run moves them up.

Only for tests and drills: a production deployment never sets these variables.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

FAIL_AT_VARIABLE = "OMOPFLOW_FAIL_AT"
FAIL_MODE_VARIABLE = "OMOPFLOW_FAIL_MODE"
STAGES = ("staging", "mapping", "validation", "publishing", "pointers")
MODES = ("kill", "raise")


class InjectedFault(RuntimeError):
    """Raised at the stage named by $OMOPFLOW_FAIL_AT when $OMOPFLOW_FAIL_MODE is `raise`."""


def checkpoint(stage: str, env: Mapping[str, str] = os.environ) -> None:
    """Die here if $OMOPFLOW_FAIL_AT names `stage`; otherwise do nothing.

    Unknown names (in the call or in the variable) are errors, so a typo in a drill never
    passes as "the run survived the crash".
    """
    if stage not in STAGES:
        raise ValueError(f"unknown fault stage {stage!r}; known: {', '.join(STAGES)}")
    wanted = env.get(FAIL_AT_VARIABLE, "").strip()
    if not wanted:
        return
    if wanted not in STAGES:
        raise ValueError(f"{FAIL_AT_VARIABLE}={wanted!r} is not one of {', '.join(STAGES)}")
    if wanted != stage:
        return
    mode = env.get(FAIL_MODE_VARIABLE, "kill").strip() or "kill"
    if mode not in MODES:
        raise ValueError(f"{FAIL_MODE_VARIABLE}={mode!r} is not one of {', '.join(MODES)}")
    if mode == "raise":
        raise InjectedFault(f"fault injected at stage {stage!r} ({FAIL_AT_VARIABLE})")
    os.kill(os.getpid(), signal.SIGKILL)
