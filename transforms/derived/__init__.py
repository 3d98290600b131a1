"""Derived OMOP tables: observation periods, eras, CDM_SOURCE and METADATA.

They are built from the event tables the other transforms produced (already passed through
`omopflow.cdm.conform`), with Spark windows and joins only. The rules and their deviations
from OHDSI conventions are in `docs/derived.md`.
"""

from transforms.derived.cdm_source import build_cdm_source
from transforms.derived.condition_era import build_condition_era, count_condition_era_exclusions
from transforms.derived.dose_era import build_dose_era
from transforms.derived.drug_era import build_drug_era
from transforms.derived.metadata import build_metadata
from transforms.derived.observation_period import build_observation_period

__all__ = [
    "build_cdm_source",
    "build_condition_era",
    "build_dose_era",
    "build_drug_era",
    "build_metadata",
    "build_observation_period",
    "count_condition_era_exclusions",
]
