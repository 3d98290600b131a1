"""The run ledger: counts per stage that must add up, written as one JSON file per run.

Staging: every input item is staged or quarantined. Mapping: every live staged resource is
mapped to at least one OMOP row or excluded with a reason. `check` lists every sum that
fails; a run whose ledger does not add up is not published.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omopflow.frames import union_all

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from transforms.base import TableOutput

UNACCOUNTED = "unaccounted (a mapping bug)"


def mapping_section(
    staged: Mapping[str, DataFrame],
    read_types: Iterable[str],
    outputs: Iterable[TableOutput],
    not_mapped_reason: str,
) -> dict[str, Any]:
    """Account for every live staged resource: mapped (has rows) or excluded (with reason)."""
    from pyspark.sql import functions as F

    outputs = list(outputs)
    read = set(read_types)
    key = ["_site", "_resource_type", "_fhir_id"]
    if not staged:
        return {"resources_in": 0, "resources_mapped": 0, "resources_excluded": 0, "by_type": {}}
    resources = union_all(
        [
            frame.select("_site", F.lit(t).alias("_resource_type"), F.col("id").alias("_fhir_id"))
            for t, frame in staged.items()
        ]
    )
    mapped = union_all([o.rows.select(*key) for o in outputs]).distinct()
    mapped = mapped.withColumn("_mapped", F.lit(True))
    reasons = union_all([o.excluded for o in outputs if o.excluded is not None])
    reasons = reasons.groupBy(*key).agg(F.min("reason").alias("_why"))
    fallback = F.when(F.col("_resource_type").isin(sorted(read)), F.lit(UNACCOUNTED)).otherwise(
        F.lit(not_mapped_reason)
    )
    status = (
        resources.join(mapped, key, "left")
        .join(reasons, key, "left")
        .select(
            "_resource_type",
            F.when(F.col("_mapped"), F.lit(None))
            .otherwise(F.coalesce("_why", fallback))
            .alias("reason"),
        )
        .groupBy("_resource_type", "reason")
        .agg(F.count("*").alias("n"))
        .collect()
    )
    by_type: dict[str, dict[str, Any]] = {}
    for row in status:
        entry = by_type.setdefault(row["_resource_type"], {"in": 0, "mapped": 0, "excluded": {}})
        entry["in"] += row["n"]
        if row["reason"] is None:
            entry["mapped"] += row["n"]
        else:
            entry["excluded"][row["reason"]] = row["n"]
    total_in = sum(e["in"] for e in by_type.values())
    total_mapped = sum(e["mapped"] for e in by_type.values())
    return {
        "resources_in": total_in,
        "resources_mapped": total_mapped,
        "resources_excluded": total_in - total_mapped,
        "excluded_by_reason": _sum_reasons(by_type.values()),
        "by_type": dict(sorted(by_type.items())),
    }


def _sum_reasons(entries: Iterable[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for entry in entries:
        for reason, n in entry["excluded"].items():
            totals[reason] = totals.get(reason, 0) + n
    return dict(sorted(totals.items()))


def check(ledger: Mapping[str, Any]) -> list[str]:
    """Every sum that does not add up, as a sentence; empty when the ledger is whole."""
    problems = []
    staging = ledger.get("staging")
    if staging:
        arrived = staging["arrived"]
        accounted = staging["staged"] + staging["quarantined"]
        if arrived != accounted:
            problems.append(
                f"staging: {arrived} items arrived but {accounted} were staged or quarantined"
            )
    mapping = ledger.get("mapping")
    if mapping:
        accounted = mapping["resources_mapped"] + mapping["resources_excluded"]
        if mapping["resources_in"] != accounted:
            problems.append(
                f"mapping: {mapping['resources_in']} resources in, {accounted} mapped or excluded"
            )
        unaccounted = mapping.get("excluded_by_reason", {}).get(UNACCOUNTED, 0)
        if unaccounted:
            problems.append(f"mapping: {unaccounted} resources neither mapped nor excluded")
    return problems


def write(ledger: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(ledger, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
