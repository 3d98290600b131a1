"""What every table module receives and returns.

A table module (`transforms/<table>.py`) has `TABLE`, the OMOP table it fills, and
`build(ctx) -> TableOutput`. Output rows carry three provenance columns (`_site`,
`_resource_type`, `_fhir_id`) that the ledger uses to prove every staged resource became
rows or an exclusion; `omopflow.cdm.conform` drops them before anything is published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from omopflow.config import RunConfig
    from omopflow.ids import IdAllocator

PROVENANCE = ("_site", "_resource_type", "_fhir_id")
EXCLUSION_SCHEMA = "_site string, _resource_type string, _fhir_id string, reason string"
# Exclusion reason for records that start after the run's day (a source clock error).
DATE_IN_FUTURE = "date in the future"


@dataclass
class TableOutput:
    table: str
    rows: DataFrame  # CDM columns plus PROVENANCE
    excluded: DataFrame | None = None  # PROVENANCE plus `reason`


@dataclass
class MappingContext:
    spark: SparkSession
    config: RunConfig
    staged_sites: list[Path]  # each site's staging folder of the runs being mapped
    ids: IdAllocator
    pseudonym_key: bytes
    vocab: Any = None  # vocabularies.mapping.VocabularyMaps once loaded
    outputs: dict[str, DataFrame] = field(default_factory=dict)  # tables built so far
    # Staged frames by resource type; filled lazily from `staged_sites`, or given up front
    # (tests build them from hand-written fixtures with `omopflow.staging.stage_frames`).
    _staged: dict[str, DataFrame] = field(default_factory=dict)

    def staged(self, resource_type: str) -> DataFrame:
        """Live staged resources of one type, all sites; read once per run."""
        from omopflow.staging import read_staged
        from transforms.registry import MAPPED_TYPES

        if resource_type not in MAPPED_TYPES:
            # Staging parsed only MAPPED_TYPES: any other type has no FHIR columns to read.
            raise ValueError(f"{resource_type} is read but missing from registry.MAPPED_TYPES")
        if resource_type not in self._staged:
            self._staged[resource_type] = read_staged(self.spark, self.staged_sites, resource_type)
        return self._staged[resource_type]

    @property
    def read_types(self) -> set[str]:
        """Resource types some table module has read in this run."""
        return set(self._staged)

    def pseudonym(self, value: Column) -> Column:
        from omopflow.pseudonym import pseudonym

        return pseudonym(value, self.pseudonym_key)

    def person_ids(self, df: DataFrame, reference: Column) -> DataFrame:
        """Add person_id from a Patient reference (null when the patient is not staged)."""
        from pyspark.sql import functions as F

        from transforms.fhir import reference_id

        return self.ids.lookup(
            df, "person", F.col("_site"), "Patient", reference_id(reference, "Patient"), "person_id"
        )

    def in_future(self, when: Column) -> Column:
        """True when a date or datetime falls after the run's `as_of` day."""
        from pyspark.sql import functions as F

        return F.to_date(when) > F.lit(self.config.as_of)

    def visit_ids(self, df: DataFrame, reference: Column) -> DataFrame:
        """Add visit_occurrence_id from an Encounter reference; a nested encounter links to
        its root encounter's visit (see transforms.visit_detail)."""
        from transforms.fhir import as_reference
        from transforms.visit_detail import visit_ids

        return visit_ids(self, df, as_reference(reference))


def exclusions(frame: DataFrame, reason: str = "_reason") -> DataFrame:
    """The staged resources in `frame` whose `reason` column is set, as exclusions."""
    from pyspark.sql import functions as F

    return frame.where(F.col(reason).isNotNull()).select(
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
        F.col(reason).alias("reason"),
    )


def first_reason(*rules: tuple[Column, str]) -> Column:
    """The first matching rule's reason, or null: one exclusion reason per resource."""
    from pyspark.sql import functions as F

    result = F.lit(None).cast("string")
    for condition, reason in reversed(rules):
        result = F.when(condition, F.lit(reason)).otherwise(result)
    return result
