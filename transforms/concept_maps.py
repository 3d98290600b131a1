"""Fixed FHIR value-set to OMOP concept maps (gender, race, encounter class, ...), as data.

The rows come from the HL7 FHIR-to-OMOP IG ConceptMaps (input/fsh/ConceptMaps) and the US
Core OMB race/ethnicity codes; `concept_maps.tsv` beside this file says which, per row.
They are joined like any vocabulary table, broadcast, never looked up row by row.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


@cache
def _rows() -> tuple[tuple[str, str, str, int], ...]:
    text = resources.files("transforms").joinpath("concept_maps.tsv").read_text(encoding="utf-8")
    reader = csv.DictReader(text.splitlines(), delimiter="\t")
    return tuple((r["map"], r["system"], r["code"], int(r["concept_id"])) for r in reader)


def concept_map(spark: SparkSession, name: str) -> DataFrame:
    rows = [(system, code, concept) for m, system, code, concept in _rows() if m == name]
    if not rows:
        raise KeyError(f"no concept map named {name!r}")
    return spark.createDataFrame(rows, "_cm_system string, _cm_code string, _cm_concept long")


def join_concept(
    df: DataFrame, spark: SparkSession, name: str, system: Column | None, code: Column, out: str
) -> DataFrame:
    """Add `out`: the map's concept for (system, code), 0 when the code is not in the map.

    With `system` None the code alone decides (FHIR `code` elements bound to one system).
    """
    from pyspark.sql import functions as F

    table = F.broadcast(concept_map(spark, name))
    on = code == F.col("_cm_code")
    if system is not None:
        on = on & (system == F.col("_cm_system"))
    joined = df.join(table, on, "left")
    return joined.withColumn(out, F.coalesce(F.col("_cm_concept"), F.lit(0)).cast("long")).drop(
        "_cm_system", "_cm_code", "_cm_concept"
    )
