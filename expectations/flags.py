"""Count failing rows of many checks over one table in a few Spark passes.

For each table the lookups every check needs (concept, person, visit, other referenced ids)
are joined once, each check becomes a pair of boolean columns (`fails`, `applies`), and one
aggregation turns all pairs into counts; checks that count distinct values (keys, persons,
source values) and concept-level rules each take one grouped pass more. DQD's numerator is
the failing count, its denominator the applicable count. Only a handful of numbers per
check reach the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

from expectations.checks import Check
from omopflow.frames import union_all

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

MALE = 8507
FEMALE = 8532
GENDER_CONCEPTS = {"Male": MALE, "Female": FEMALE}
NO_MATCHING_CONCEPT = 0  # allowed everywhere; DQD counts it in the *Completeness checks
DEATH_GRACE_DAYS = 60  # DQD plausibleBeforeDeath: administrative records after death
VISIT_SLACK_DAYS = 7  # DQD withinVisitDates: one week either side of the visit
CONCEPT_COLUMNS = ("concept_id", "domain_id", "concept_class_id", "standard_concept")

# Check types computed from the table's schema alone (no data scan).
SCHEMA_CHECKS = frozenset({"cdmField", "cdmDatatype", "cdmTable"})
CONCEPT_LOOKUP_CHECKS = frozenset({"fkDomain", "fkClass", "isStandardValidConcept"})
PERSON_CHECKS = frozenset(
    {"plausibleAfterBirth", "plausibleBeforeDeath", "plausibleDuringLife", "plausibleGender"}
)


@dataclass(frozen=True)
class Counts:
    failed: int
    total: int


@dataclass
class Lookups:
    """Small per-run DataFrames that checks join to, built once for all tables."""

    concept: DataFrame  # concept_id, domain_id, concept_class_id, standard_valid
    person: DataFrame | None  # person_id, birth_date, death_date, gender_concept_id
    visit: DataFrame | None  # visit_occurrence_id, visit_start, visit_end
    tables: Mapping[str, DataFrame]
    as_of: date
    person_count: int = 0


@dataclass
class TablePlan:
    """What one table's pass computes: checks that can run and notes for those that cannot."""

    runnable: list[Check] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # check name -> reason


def build_lookups(concept: DataFrame, tables: Mapping[str, DataFrame], as_of: date) -> Lookups:
    """Build the concept, person and visit lookups shared by every table's pass."""
    from pyspark.sql import functions as F

    missing = [c for c in (*CONCEPT_COLUMNS, "invalid_reason") if c not in concept.columns]
    if missing:
        raise ValueError(f"the concept table lacks columns {missing}; pass the vocabulary CONCEPT")
    concept_info = concept.select(
        F.col("concept_id").cast("long").alias("concept_id"),
        "domain_id",
        "concept_class_id",
        # coalesce: a null standard_concept (non-standard) must read as False, not unknown.
        (
            F.coalesce(F.col("standard_concept") == "S", F.lit(False))
            & F.col("invalid_reason").isNull()
        ).alias("standard_valid"),
    )
    person = _person_lookup(tables) if "person" in tables else None
    visit = None
    if "visit_occurrence" in tables:
        visit = (
            tables["visit_occurrence"]
            .groupBy("visit_occurrence_id")
            .agg(
                F.min("visit_start_date").alias("visit_start"),
                F.max("visit_end_date").alias("visit_end"),
            )
        )
    return Lookups(concept=concept_info, person=person, visit=visit, tables=tables, as_of=as_of)


def _person_lookup(tables: Mapping[str, DataFrame]) -> DataFrame:
    from pyspark.sql import functions as F

    people = tables["person"]
    # DQD: birth_datetime, else year/month/day of birth with 1 for a missing month or day.
    birth = F.coalesce(
        F.to_date("birth_datetime"),
        F.make_date(
            "year_of_birth",
            F.coalesce("month_of_birth", F.lit(1)),
            F.coalesce("day_of_birth", F.lit(1)),
        ),
    )
    # groupBy, not select: a duplicated person_id (caught by isPrimaryKey) must not
    # multiply the rows of every table joined to it.
    lookup = people.groupBy("person_id").agg(
        F.min(birth).alias("birth_date"), F.first("gender_concept_id").alias("gender_concept_id")
    )
    if "death" in tables:
        deaths = tables["death"].groupBy("person_id").agg(F.min("death_date").alias("death_date"))
        return lookup.join(deaths, "person_id", "left")
    return lookup.withColumn("death_date", F.lit(None).cast("date"))


def plan_table(table: str, df: DataFrame, checks: list[Check], lookups: Lookups) -> TablePlan:
    """Split a table's checks into those this run can compute and those it must skip."""
    plan = TablePlan()
    columns = set(df.columns)
    for check in checks:
        reason = _skip_reason(table, check, columns, lookups)
        if reason:
            plan.skipped[check.name] = reason
        else:
            plan.runnable.append(check)
    return plan


def _skip_reason(table: str, check: Check, columns: set[str], lookups: Lookups) -> str:
    if check.check_type in SCHEMA_CHECKS:
        return ""
    needed = {check.field, check.params.get("concept_field"), check.params.get("end_field")}
    if check.params.get("after_table") == table:
        needed.add(check.params["after_field"])
    if check.check_type in PERSON_CHECKS | {"measurePersonCompleteness"}:
        needed.add("person_id")
    absent = sorted(n for n in needed if n and n not in columns)
    if absent:
        return f"column {', '.join(absent)} missing from {table}"
    fk_table = check.params.get("fk_table")
    if check.check_type == "isForeignKey" and fk_table not in ("concept", *lookups.tables):
        return f"referenced table {fk_table} not in this build"
    uses_person = check.check_type in PERSON_CHECKS | {"measurePersonCompleteness"}
    if (uses_person or check.params.get("after_table") == "person") and lookups.person is None:
        return "no person table in this build"
    if check.check_type == "withinVisitDates" and lookups.visit is None:
        return "no visit_occurrence table in this build"
    after_table = check.params.get("after_table")
    if after_table and after_table not in (table, "person"):
        return f"compares with {after_table}, not checked by the gate"
    return ""


def count_failures(
    table: str, df: DataFrame, checks: list[Check], lookups: Lookups
) -> tuple[int, dict[str, Counts]]:
    """Return the table's row count and the failing/applicable counts of each check.

    `checks` must be runnable (see `plan_table`). One Spark job counts the rows of all
    field and table checks; checks that count distinct values (keys, persons, source
    values) take one more, concept-level checks (a few hundred rules per table) another.
    """
    from pyspark.sql import functions as F

    joined = _join_lookups(table, df, checks, lookups)
    row_checks = [c for c in checks if c.check_type not in SCHEMA_CHECKS and not _per_concept(c)]
    measures = [MEASURES[c.check_type](c, table, lookups) for c in row_checks]
    flags, aggregations = [F.lit(1).alias("__one")], [F.count(F.lit(1)).alias("__rows")]
    for index, measure in enumerate(measures):
        if measure.mode == "rows":
            flags += [measure.fails.alias(f"f{index}"), measure.applies.alias(f"a{index}")]
            aggregations += _aggregate(index)
    row = joined.select(*flags).agg(*aggregations).first()
    assert row is not None  # an aggregation without groupBy always returns one row
    total_rows = int(row["__rows"] or 0)
    counts = {
        c.name: _schema_counts(c, df, total_rows) for c in checks if c.check_type in SCHEMA_CHECKS
    }
    keyed = _count_keys(joined, {i: m for i, m in enumerate(measures) if m.mode != "rows"})
    for index, (check, measure) in enumerate(zip(row_checks, measures, strict=True)):
        if measure.mode == "rows":
            failed, applicable = int(row[f"failed{index}"] or 0), int(row[f"total{index}"] or 0)
        elif measure.mode == "duplicates":
            failed, applicable = keyed[index].duplicates, total_rows
        else:
            failed, applicable = keyed[index].failed, keyed[index].total
        if check.check_type == "measurePersonCompleteness":
            failed, applicable = lookups.person_count - failed, lookups.person_count
        counts[check.name] = Counts(failed=max(failed, 0), total=applicable)
    counts.update(_count_concept_rules(joined, [c for c in checks if _per_concept(c)]))
    return total_rows, counts


@dataclass(frozen=True)
class KeyCounts:
    failed: int  # distinct keys on a failing row
    total: int  # distinct keys on an applicable row
    duplicates: int  # rows beyond the first of each key


def _count_keys(joined: DataFrame, measures: Mapping[int, Measure]) -> dict[int, KeyCounts]:
    """Distinct-key counts of the "distinct" and "duplicates" measures, by measure index.

    One narrow row (measure, key, flags) per measure and table row, grouped by key: counting
    distinct values of several expressions in the row pass's one aggregation would make
    Spark copy every wide row once per expression (its Expand), which at 10,000 patients took
    most of the gate's time.
    """
    from pyspark.sql import functions as F

    if not measures:
        return {}
    entries = joined.select(
        *[
            F.struct(
                F.lit(index).alias("measure"),
                measure.key.cast("string").alias("key"),
                F.coalesce(measure.fails, F.lit(False)).alias("fails"),
                F.coalesce(measure.applies, F.lit(False)).alias("applies"),
            ).alias(f"e{index}")
            for index, measure in measures.items()
        ]
    )
    # Two selects: a window in a measure (period overlap) cannot sit under a generator.
    keys = entries.select(F.explode(F.array(*entries.columns)).alias("e")).select("e.*")
    per_key = (
        keys.where(F.col("key").isNotNull())
        .groupBy("measure", "key")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.max(F.col("fails").cast("int")).alias("fails"),
            F.max(F.col("applies").cast("int")).alias("applies"),
        )
    )
    found = per_key.groupBy("measure").agg(
        F.sum("fails").alias("failed"),
        F.sum("applies").alias("total"),
        F.sum(F.col("n") - 1).alias("duplicates"),
    )
    counted = {
        r["measure"]: KeyCounts(int(r["failed"]), int(r["total"]), int(r["duplicates"]))
        for r in found.collect()
    }
    return {index: counted.get(index, KeyCounts(0, 0, 0)) for index in measures}


def _per_concept(check: Check) -> bool:
    return "concept_id" in check.params


def _count_concept_rules(joined: DataFrame, rules: list[Check]) -> dict[str, Counts]:
    """Concept-level checks as a table of rules joined to the rows, counted per rule.

    One flag column per rule would make plans of hundreds of columns that Spark takes
    long to optimise; a broadcast rule table and one groupBy scale with the data instead.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not rules:
        return {}
    schema = T.StructType(
        [
            T.StructField("__rule", T.IntegerType()),
            T.StructField("__rule_field", T.StringType()),
            T.StructField("__rule_concept", T.LongType()),
            T.StructField("__rule_unit", T.LongType()),
            T.StructField("__rule_type", T.StringType()),
            T.StructField("__rule_bound", T.DoubleType()),
            T.StructField("__rule_gender", T.LongType()),
            T.StructField("__rule_units", T.ArrayType(T.LongType())),
        ]
    )
    values = [
        (
            index,
            rule.params["concept_field"],
            rule.params["concept_id"],
            rule.params.get("unit_concept_id"),
            rule.check_type,
            rule.params.get("bound"),
            GENDER_CONCEPTS.get(rule.params.get("gender", "")),
            rule.params.get("units"),
        )
        for index, rule in enumerate(rules)
    ]
    table_rules = joined.sparkSession.createDataFrame(values, schema)
    parts = []
    for concept_field in sorted({r.params["concept_field"] for r in rules}):
        these = F.broadcast(table_rules.filter(F.col("__rule_field") == concept_field))
        parts.append(joined.join(these, joined[concept_field] == these["__rule_concept"]))
    matched = union_all(parts)
    fails, applies = _rule_flags(set(joined.columns))
    per_rule = matched.groupBy("__rule").agg(
        F.sum(F.when(fails & applies, 1).otherwise(0)).alias("failed"),
        F.sum(F.when(applies, 1).otherwise(0)).alias("total"),
    )
    found = {r["__rule"]: Counts(int(r["failed"]), int(r["total"])) for r in per_rule.collect()}
    return {rule.name: found.get(index, Counts(0, 0)) for index, rule in enumerate(rules)}


def _rule_flags(columns: set[str]) -> tuple[Column, Column]:
    """Failing and applicable flags of a row matched to one concept-level rule.

    A row without a unit fails plausibleUnitConceptIds: a lab value needs its unit.
    """
    from pyspark.sql import functions as F

    def column_or_null(name: str) -> Column:
        return F.col(name) if name in columns else F.lit(None).cast("long")

    kind, bound = F.col("__rule_type"), F.col("__rule_bound")
    value, gender = column_or_null("value_as_number"), column_or_null("__person__gender_concept_id")
    unit = column_or_null("unit_concept_id")
    fails = (
        F.when(kind == "plausibleValueLow", value < bound)
        .when(kind == "plausibleValueHigh", value > bound)
        .when(kind == "plausibleGender", gender != F.col("__rule_gender"))
        .when(
            kind == "plausibleUnitConceptIds",
            ~F.coalesce(F.array_contains("__rule_units", unit), F.lit(False)),
        )
    )
    same_unit = unit == F.col("__rule_unit")
    applies = (
        F.when(kind.isin("plausibleValueLow", "plausibleValueHigh"), same_unit & value.isNotNull())
        .when(kind == "plausibleGender", gender.isNotNull())
        .otherwise(F.lit(True))
    )
    return fails, applies


@dataclass(frozen=True)
class Measure:
    fails: Column
    applies: Column
    key: Column  # the value counted by the "distinct" and "duplicates" modes
    mode: str = "rows"  # rows | distinct | duplicates


def _aggregate(index: int) -> list[Column]:
    from pyspark.sql import functions as F

    fails, applies = F.col(f"f{index}"), F.col(f"a{index}")
    failed = F.sum(F.when(fails & applies, 1).otherwise(0))
    total = F.sum(F.when(applies, 1).otherwise(0))
    return [failed.alias(f"failed{index}"), total.alias(f"total{index}")]


def _schema_counts(check: Check, df: DataFrame, rows: int) -> Counts:
    from omopflow import cdm

    if check.check_type == "cdmTable":
        return Counts(failed=0, total=max(rows, 1))
    spec = {f.name: f for f in cdm.table_fields(check.table)}[check.field or ""]
    present = {f.name: f.dataType for f in df.schema.fields}
    if check.check_type == "cdmField":
        ok = spec.name in present
    else:
        ok = spec.name not in present or present[spec.name] == cdm.spark_type(spec)
    # A schema fault affects every row: report it as all rows failing (at least one).
    return Counts(failed=0 if ok else max(rows, 1), total=max(rows, 1))


def _join_lookups(table: str, df: DataFrame, checks: list[Check], lookups: Lookups) -> DataFrame:
    from pyspark.sql import functions as F

    concept_fields = sorted(
        {
            c.field
            for c in checks
            if c.field
            and (
                c.check_type in CONCEPT_LOOKUP_CHECKS
                or (c.check_type == "isForeignKey" and c.params["fk_table"] == "concept")
            )
        }
    )
    joined = df
    for name in concept_fields:
        found = F.broadcast(
            lookups.concept.select(
                *(F.col(c).alias(f"__{name}__{c}") for c in lookups.concept.columns)
            )
        )
        joined = joined.join(found, joined[name] == found[f"__{name}__concept_id"], "left")
    if lookups.person is not None and table != "person" and _needs_person(checks):
        person = lookups.person.select(
            *(F.col(c).alias(f"__person__{c}") for c in lookups.person.columns)
        )
        joined = joined.join(person, joined["person_id"] == person["__person__person_id"], "left")
    if lookups.visit is not None and table != "visit_occurrence" and _needs_visit(checks):
        visit = lookups.visit.select(
            *(F.col(c).alias(f"__visit__{c}") for c in lookups.visit.columns)
        )
        condition = joined["visit_occurrence_id"] == visit["__visit__visit_occurrence_id"]
        joined = joined.join(visit, condition, "left")
    for check in checks:
        if check.check_type == "isForeignKey" and _generic_fk(table, check):
            fk_table, fk_field = check.params["fk_table"], check.params["fk_field"]
            target = f"__fk__{check.field}"
            ids = lookups.tables[fk_table].select(F.col(fk_field).alias(target)).distinct()
            joined = joined.join(ids, joined[check.field or ""] == ids[target], "left")
    return joined


def _needs_person(checks: list[Check]) -> bool:
    return any(
        c.check_type in PERSON_CHECKS | {"measurePersonCompleteness"}
        or (c.check_type == "isForeignKey" and c.params["fk_table"] == "person")
        or c.params.get("after_table") == "person"
        for c in checks
    )


def _needs_visit(checks: list[Check]) -> bool:
    return any(
        c.check_type == "withinVisitDates"
        or (c.check_type == "isForeignKey" and c.field == "visit_occurrence_id")
        for c in checks
    )


def _generic_fk(table: str, check: Check) -> bool:
    """True for references that are not served by the concept, person or visit lookups."""
    fk_table = check.params["fk_table"]
    if fk_table == "concept":
        return False
    if fk_table == "person" and table != "person" and check.field == "person_id":
        return False
    return not (
        fk_table == "visit_occurrence"
        and table != "visit_occurrence"
        and check.field == "visit_occurrence_id"
    )


# ---- one function per check type: (check, table, lookups) -> Measure ----------------------


def _value(check: Check) -> Column:
    from pyspark.sql import functions as F

    return F.col(check.field or "")


def _as_date(column: Column) -> Column:
    from pyspark.sql import functions as F

    return F.to_date(column)


def _no_key() -> Column:
    from pyspark.sql import functions as F

    return F.lit(None)


def _always() -> Column:
    from pyspark.sql import functions as F

    return F.lit(True)


def is_required(check: Check, table: str, lookups: Lookups) -> Measure:
    return Measure(fails=_value(check).isNull(), applies=_always(), key=_no_key())


def is_primary_key(check: Check, table: str, lookups: Lookups) -> Measure:
    return Measure(fails=_always(), applies=_always(), key=_value(check), mode="duplicates")


def is_foreign_key(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value = _value(check)
    fk_table = check.params["fk_table"]
    if fk_table == "concept":
        found = F.col(f"__{check.field}__concept_id")
        fails = (value != NO_MATCHING_CONCEPT) & found.isNull()
    elif not _generic_fk(table, check):
        prefix = "__person__person_id" if fk_table == "person" else "__visit__visit_occurrence_id"
        fails = F.col(prefix).isNull()
    else:
        fails = F.col(f"__fk__{check.field}").isNull()
    return Measure(fails=value.isNotNull() & fails, applies=value.isNotNull(), key=_no_key())


def fk_domain(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    domain = F.col(f"__{check.field}__domain_id")
    fails = (_value(check) != NO_MATCHING_CONCEPT) & (domain != check.params["domain"])
    return Measure(fails=fails, applies=_always(), key=_no_key())


def fk_class(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    concept_class = F.col(f"__{check.field}__concept_class_id")
    fails = (_value(check) != NO_MATCHING_CONCEPT) & (
        concept_class != check.params["concept_class"]
    )
    return Measure(fails=fails, applies=_always(), key=_no_key())


def is_standard_valid_concept(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value = _value(check)
    standard_valid = F.col(f"__{check.field}__standard_valid")
    # A concept absent from the vocabulary is isForeignKey's failure, not this one's.
    fails = (value != NO_MATCHING_CONCEPT) & ~standard_valid
    return Measure(fails=fails, applies=value.isNotNull(), key=_no_key())


def concept_zero(check: Check, table: str, lookups: Lookups) -> Measure:
    return Measure(fails=_value(check) == NO_MATCHING_CONCEPT, applies=_always(), key=_no_key())


def source_value_completeness(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value = _value(check)
    unmapped = F.col(check.params["concept_field"]) == NO_MATCHING_CONCEPT
    return Measure(fails=unmapped, applies=value.isNotNull(), key=value, mode="distinct")


def _bound(check: Check, lookups: Lookups) -> Column:
    from pyspark.sql import functions as F

    bound = check.params["bound"]
    if bound == "tomorrow":
        return F.lit(lookups.as_of + timedelta(days=1))
    if bound == "next_year":
        return F.lit(lookups.as_of.year + 1)
    if isinstance(bound, str):
        return F.lit(date.fromisoformat(bound))
    return F.lit(bound)


def _compared_value(check: Check) -> Column:
    bound = check.params["bound"]
    is_date = bound == "tomorrow" or (isinstance(bound, str) and bound != "next_year")
    return _as_date(_value(check)) if is_date else _value(check)


def plausible_value_low(check: Check, table: str, lookups: Lookups) -> Measure:
    value = _compared_value(check)
    return Measure(fails=value < _bound(check, lookups), applies=value.isNotNull(), key=_no_key())


def plausible_value_high(check: Check, table: str, lookups: Lookups) -> Measure:
    value = _compared_value(check)
    return Measure(fails=value > _bound(check, lookups), applies=value.isNotNull(), key=_no_key())


def plausible_start_before_end(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    start, end = _as_date(_value(check)), _as_date(F.col(check.params["end_field"]))
    return Measure(fails=start > end, applies=start.isNotNull() & end.isNotNull(), key=_no_key())


def plausible_temporal_after(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value = _as_date(_value(check))
    if check.params["after_table"] == table:
        after = _as_date(F.col(check.params["after_field"]))
    else:
        after = F.col("__person__birth_date")
    return Measure(
        fails=value < after, applies=value.isNotNull() & after.isNotNull(), key=_no_key()
    )


def plausible_after_birth(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value, birth = _as_date(_value(check)), F.col("__person__birth_date")
    return Measure(fails=value < birth, applies=value.isNotNull(), key=_no_key())


def plausible_before_death(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value, death = _as_date(_value(check)), F.col("__person__death_date")
    fails = value > F.date_add(death, DEATH_GRACE_DAYS)
    return Measure(fails=fails, applies=value.isNotNull() & death.isNotNull(), key=_no_key())


def plausible_during_life(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value, death = _as_date(_value(check)), F.col("__person__death_date")
    return Measure(
        fails=value > death, applies=value.isNotNull() & death.isNotNull(), key=_no_key()
    )


def within_visit_dates(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    value = _as_date(_value(check))
    start, end = F.col("__visit__visit_start"), F.col("__visit__visit_end")
    fails = (value < F.date_sub(start, VISIT_SLACK_DAYS)) | (
        value > F.date_add(end, VISIT_SLACK_DAYS)
    )
    applies = value.isNotNull() & F.col("__visit__visit_occurrence_id").isNotNull()
    return Measure(fails=fails, applies=applies, key=_no_key())


def measure_person_completeness(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import functions as F

    # Counts persons covered by the table; count_failures turns that into persons without.
    covered = F.col("__person__person_id").isNotNull()
    return Measure(fails=covered, applies=covered, key=F.col("person_id"), mode="distinct")


def observation_period_overlap(check: Check, table: str, lookups: Lookups) -> Measure:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_person = Window.partitionBy("person_id").orderBy(
        "observation_period_start_date", "observation_period_end_date"
    )
    previous_end = F.lag("observation_period_end_date").over(by_person)
    # Overlapping or back to back (next day): DQD wants such periods merged into one.
    fails = F.col("observation_period_start_date") <= F.date_add(previous_end, 1)
    return Measure(fails=fails, applies=_always(), key=F.col("person_id"), mode="distinct")


MEASURES: dict[str, Callable[[Check, str, Lookups], Measure]] = {
    "isRequired": is_required,
    "measureValueCompleteness": is_required,
    "isPrimaryKey": is_primary_key,
    "isForeignKey": is_foreign_key,
    "fkDomain": fk_domain,
    "fkClass": fk_class,
    "isStandardValidConcept": is_standard_valid_concept,
    "standardConceptRecordCompleteness": concept_zero,
    "sourceConceptRecordCompleteness": concept_zero,
    "sourceValueCompleteness": source_value_completeness,
    "plausibleValueLow": plausible_value_low,
    "plausibleValueHigh": plausible_value_high,
    "plausibleStartBeforeEnd": plausible_start_before_end,
    "plausibleTemporalAfter": plausible_temporal_after,
    "plausibleAfterBirth": plausible_after_birth,
    "plausibleBeforeDeath": plausible_before_death,
    "plausibleDuringLife": plausible_during_life,
    "withinVisitDates": within_visit_dates,
    "measurePersonCompleteness": measure_person_completeness,
    "measureObservationPeriodOverlap": observation_period_overlap,
}
