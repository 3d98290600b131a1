"""Put `omopflow.faults.checkpoint` calls at the pipeline's stage boundaries, from outside.

Until `omopflow/pipeline.py` calls `faults.checkpoint(...)` itself (docs/governance.md
names the lines), the fault tests wrap the functions the pipeline calls at each boundary.
Used in-process (with a pytest MonkeyPatch) and by the subprocess that is killed for real.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omopflow import faults, pipeline, publish
from omopflow.ids import IdAllocator


def _after(stage: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        faults.checkpoint(stage)
        return result

    return wrapped


def _before(stage: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        faults.checkpoint(stage)
        return func(*args, **kwargs)

    return wrapped


def install(setattr: Callable[[object, str, Any], None]) -> None:
    """`setattr` is MonkeyPatch.setattr in tests, plain `setattr` in a throw-away process."""
    # staging: this run's staging and quarantine written, nothing switched
    setattr(pipeline, "stage", _after("staging", pipeline.stage))
    # mapping: the candidate tables written under build/<run>/, derived ones not yet
    setattr(pipeline, "_derive", _before("mapping", pipeline._derive))
    # validation: the gate has judged the build; publishing has not started
    setattr(pipeline, "_validate", _after("validation", pipeline._validate))
    # publishing: the new crosswalk version written, its pointer not switched
    setattr(IdAllocator, "write", _after("publishing", IdAllocator.write))
    # pointers: crosswalk and staging pointers switched, `current` not yet
    setattr(publish, "publish_release", _before("pointers", publish.publish_release))
