"""Build every derived table of a run from its written event tables, in one place.

Dates in CDM_SOURCE and METADATA come from the data (the last day any observation period
reaches), not from the clock, so a re-run on the same input writes the same bytes; the
run's wall-clock time is in the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from transforms.derived.cdm_source import build_cdm_source
from transforms.derived.condition_era import build_condition_era, count_condition_era_exclusions
from transforms.derived.dose_era import build_dose_era
from transforms.derived.drug_era import build_drug_era
from transforms.derived.metadata import build_metadata, run_metadata
from transforms.derived.observation_period import EVENT_DATES, build_observation_period

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The HL7 FHIR-to-OMOP IG version the mappings follow (sushi-config.yaml of the IG source in
# ../shared/data/spec/hl7-fhir-omop-ig; a test keeps the two in step).
IG_VERSION = "2.0.0-ballot"


@dataclass
class Derived:
    tables: dict[str, DataFrame] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def derive(
    spark: SparkSession,
    events: Mapping[str, DataFrame],
    vocabulary: Any,
    source: Mapping[str, str],
    input_exports: Sequence[str],
    gap_days: int,
) -> Derived:
    """`events`: the run's conformed CDM tables (person included); `vocabulary`: a release."""
    from pyspark.sql import functions as F

    result = Derived()
    dated = {name: frame for name, frame in events.items() if name in EVENT_DATES}
    periods = build_observation_period(dated, gap_days=gap_days).localCheckpoint()
    result.tables["observation_period"] = periods
    if "person" in events:
        without = events["person"].join(periods, "person_id", "left_anti").count()
        result.notes["persons_without_observation_period"] = without
    if "condition_occurrence" in events:
        conditions = events["condition_occurrence"]
        result.tables["condition_era"] = build_condition_era(conditions)
        result.notes["condition_era_excluded"] = count_condition_era_exclusions(conditions)
    if "drug_exposure" in events:
        drugs = events["drug_exposure"]
        eras, excluded = build_drug_era(
            drugs, vocabulary.table("concept"), vocabulary.table("concept_ancestor")
        )
        result.tables["drug_era"] = eras
        result.notes["drug_era_excluded"] = excluded
        dose, reason = build_dose_era(drugs, vocabulary.table("drug_strength"))
        if dose is None:
            result.notes["dose_era_skipped"] = reason
        else:
            result.tables["dose_era"] = dose
    summary = periods.agg(F.max("observation_period_end_date")).first()
    last_day = summary[0] if summary is not None else None
    data_date = last_day if isinstance(last_day, date) else date(1970, 1, 1)
    result.tables["cdm_source"] = build_cdm_source(spark, source, vocabulary.version, data_date)
    facts = run_metadata(vocabulary.version, input_exports, IG_VERSION)
    result.tables["metadata"] = build_metadata(spark, facts, metadata_date=data_date)
    return result
