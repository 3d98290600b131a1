"""Tiny hand-written FHIR resources for tests: readable, one corner case each."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


def patient(pid: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "gender": "female",
        "birthDate": "1980-02-03",
    }
    body.update(fields)
    return body


def encounter(eid: str, pid: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": "2020-01-01T10:00:00+00:00", "end": "2020-01-01T11:00:00+00:00"},
    }
    body.update(fields)
    return body


def write_ndjson(path: Path, lines: list[Any]) -> Path:
    """Objects are dumped as JSON; strings and bytes are written as they are (broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"".join(
        (
            line
            if isinstance(line, bytes)
            else (line if isinstance(line, str) else json.dumps(line)).encode("utf-8")
        )
        + b"\n"
        for line in lines
    )
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def bundle(entries: list[dict[str, Any]], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
