"""Clinical events: every clinical FHIR resource flattened into one frame, then routed.

"Flatten first, project second": one function per resource type turns its staged frame into
the same resource-level shape (patient and encounter references, raw start/end, codings,
default domain, type concept, drug quantities, and a list of *parts*: the resource itself and,
for Observations, each component). `clinical_events` then applies the shared steps once per
run: exclusions (one reason per resource), person and visit ids, datetimes in the run's time
zone, the vocabulary joins, domain routing (IG f2o-037) and the natural key each row's id
comes from. Table modules (condition_occurrence, drug_exposure, ...) only select their
domain's rows and project them to CDM columns.

Routing: a code whose standard concept was found goes to its concept's domain table; a
standard concept of any other domain ('Spec Anatomic Site', 'Meas Value', ...) goes to
OBSERVATION; an unmapped code (concept 0) stays in its resource's default table.
AllergyIntolerance is the exception the IG prescribes (Allergy.fml): always OBSERVATION, the
category's allergy concept as the observation and the substance as the value (the code itself
is the observation when the category is unknown). docs/mapping.md has every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from omopflow.frames import union_all
from transforms.base import DATE_IN_FUTURE, MappingContext, first_reason
from transforms.constants import (
    ALLERGY_CATEGORY_CONCEPTS,
    COMPARATOR_CONCEPTS,
    DOMAIN_TABLES,
    FALLBACK_DOMAIN,
    NO,
    YES,
)
from transforms.fhir import fhir_datetime, first, reference_id
from vocabularies.concepts import (
    EHR,
    EHR_ADMINISTRATION_RECORD,
    EHR_PRESCRIPTION,
    LAB,
    NO_MATCHING_CONCEPT,
    PATIENT_SELF_REPORT,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import Column, DataFrame

EVENTS_KEY = "_clinical_events"  # where the run's event frame is kept in ctx.outputs
EXCLUDED_KEY = "_clinical_exclusions"
MEDICATION_REASON = "Medication read through medicationReference (no row of its own)"
CODINGS = "array<struct<system:string,code:string,display:string>>"
# Observation categories the IG maps to MEASUREMENT (Measurement.fml, SimpleVitalSignsMap).
MEASUREMENT_CATEGORIES = ("laboratory", "vital-signs")
DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7}


@dataclass(frozen=True)
class ClinicalEvents:
    rows: DataFrame  # one row per OMOP record, `_table` says which table
    excluded: DataFrame  # PROVENANCE, reason, `_table` (the resource's default table)


def clinical_events(ctx: MappingContext) -> ClinicalEvents:
    """The run's events, built on first use and shared by every clinical table module."""
    if EVENTS_KEY not in ctx.outputs:
        rows, excluded = _build(ctx)
        ctx.outputs[EVENTS_KEY] = rows.localCheckpoint()
        ctx.outputs[EXCLUDED_KEY] = excluded.localCheckpoint()
    return ClinicalEvents(ctx.outputs[EVENTS_KEY], ctx.outputs[EXCLUDED_KEY])


def table_rows(ctx: MappingContext, table: str, id_column: str) -> DataFrame:
    """The events routed to `table`, with their stable id in `id_column`."""
    from pyspark.sql import functions as F

    events = clinical_events(ctx).rows.where(F.col("_table") == table)
    keyed = events.select(
        "*",
        F.col("_site").alias("site"),
        F.col("_resource_type").alias("resource_type"),
    )
    with_ids = ctx.ids.assign(keyed, table, id_column)
    return with_ids.drop("site", "resource_type", "source_key")


def table_exclusions(ctx: MappingContext, table: str) -> DataFrame:
    """Excluded resources whose default table is `table`: each resource is counted once."""
    from pyspark.sql import functions as F

    excluded = clinical_events(ctx).excluded
    return excluded.where(F.col("_table") == table).drop("_table")


# --- shared column builders -------------------------------------------------------------


def codings(concept: Column) -> Column:
    """A CodeableConcept's codings as array<system, code, display>; empty when absent."""
    from pyspark.sql import functions as F

    slim = F.transform(
        concept["coding"],
        lambda c: F.struct(
            c["system"].alias("system"), c["code"].alias("code"), c["display"].alias("display")
        ),
    )
    return F.coalesce(slim, F.array().cast(CODINGS))


def _null(type_name: str) -> Column:
    from pyspark.sql import functions as F

    return F.lit(None).cast(type_name)


def part(
    name: Column,
    code: Column,
    quantity: Column | None = None,
    value_concept: Column | None = None,
    value_string: Column | None = None,
    value_boolean: Column | None = None,
    value_integer: Column | None = None,
    reference_range: Column | None = None,
) -> Column:
    """One coded statement of a resource (the resource itself or an Observation component)."""
    from pyspark.sql import functions as F

    number = quantity["value"] if quantity is not None else _null("double")
    if value_integer is not None:
        number = F.coalesce(number, value_integer.cast("double"))
    low_high = first(reference_range) if reference_range is not None else None
    return F.struct(
        name.alias("part"),
        codings(code).alias("codings"),
        number.cast("double").alias("value_number"),
        (quantity["comparator"] if quantity is not None else _null("string")).alias("comparator"),
        (quantity["system"] if quantity is not None else _null("string")).alias("unit_system"),
        (quantity["code"] if quantity is not None else _null("string")).alias("unit_code"),
        (quantity["unit"] if quantity is not None else _null("string")).alias("unit_text"),
        (codings(value_concept) if value_concept is not None else F.array().cast(CODINGS)).alias(
            "value_codings"
        ),
        (value_string if value_string is not None else _null("string")).alias("value_string"),
        (value_boolean if value_boolean is not None else _null("boolean")).alias("value_boolean"),
        (low_high["low"]["value"] if low_high is not None else _null("double")).alias("range_low"),
        (low_high["high"]["value"] if low_high is not None else _null("double")).alias(
            "range_high"
        ),
    )


def status_reason(status: Column, excluded: tuple[str, ...], label: str = "status") -> Column:
    """`"<label> <value>"` when `status` is one of the excluded values, else null."""
    from pyspark.sql import functions as F

    return F.when(status.isin(*excluded), F.concat(F.lit(f"{label} "), status))


def days(duration: Column) -> Column:
    """A FHIR Duration in whole days (d or wk); null for other units."""
    from pyspark.sql import functions as F

    unit = F.coalesce(duration["code"], duration["unit"])
    factor = F.lit(None).cast("int")
    for name, n in DAYS_PER_UNIT.items():
        factor = F.when(unit == name, F.lit(n)).otherwise(factor)
    return F.round(duration["value"] * factor).cast("int")


def resource_frame(
    df: DataFrame,
    *,
    patient: Column,
    visit: Column | None,
    start: Column,
    end: Column | None,
    default_domain: Column | str,
    type_concept: Column | int,
    parts: Column,
    reason: Column,
    quantity: Column | None = None,
    days_supply: Column | None = None,
    refills: Column | None = None,
    route: Column | None = None,
    fixed_concept: Column | None = None,
) -> DataFrame:
    """The resource-level shape every flattener returns, so all of them union by name."""
    from pyspark.sql import functions as F

    return df.select(
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
        patient.alias("_patient_ref"),
        (visit if visit is not None else _null("string")).alias("_visit_ref"),
        start.alias("_start_raw"),
        (end if end is not None else F.array().cast("array<string>")).alias("_end_raw"),
        (F.lit(default_domain) if isinstance(default_domain, str) else default_domain).alias(
            "_default_domain"
        ),
        (F.lit(type_concept) if isinstance(type_concept, int) else type_concept)
        .cast("long")
        .alias("type_concept_id"),
        parts.alias("_parts"),
        reason.alias("_status_reason"),
        (quantity if quantity is not None else _null("double")).cast("double").alias("quantity"),
        (days_supply if days_supply is not None else _null("int")).cast("int").alias("days_supply"),
        (refills if refills is not None else _null("int")).cast("int").alias("refills"),
        (codings(route) if route is not None else F.array().cast(CODINGS)).alias("_route_codings"),
        (fixed_concept if fixed_concept is not None else _null("long"))
        .cast("long")
        .alias("_fixed_concept_id"),
    )


def candidates(*values: Column | str) -> Column:
    """Date elements in order of preference; the first that parses is used."""
    from pyspark.sql import functions as F

    return F.array(*[F.col(v) if isinstance(v, str) else v for v in values]).cast("array<string>")


def first_datetime(values: Column, timezone: str) -> Column:
    """The first of `candidates` that is a usable FHIR date or dateTime (null when none)."""
    from pyspark.sql import functions as F

    parsed = F.transform(values, lambda v: fhir_datetime(v, timezone))
    return F.get(F.filter(parsed, lambda t: t.isNotNull()), 0)


def _one_part(code: Column) -> Column:
    from pyspark.sql import functions as F

    return F.array(part(F.lit(""), code))


# --- one flattener per resource type ----------------------------------------------------


def flatten_condition(ctx: MappingContext) -> DataFrame:
    """IG ConditionMap: onset, else recordedDate, starts the condition; abatement ends it."""
    from pyspark.sql import functions as F

    df = ctx.staged("Condition")
    verification = first(F.col("verificationStatus.coding"))["code"]
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("encounter.reference"),
        start=candidates("onsetDateTime", "onsetPeriod.start", "recordedDate"),
        end=candidates("abatementDateTime", "abatementPeriod.end"),
        default_domain="Condition",
        type_concept=EHR,
        parts=_one_part(F.col("code")),
        reason=status_reason(verification, ("entered-in-error", "refuted"), "verification"),
    )


def flatten_procedure(ctx: MappingContext) -> DataFrame:
    from pyspark.sql import functions as F

    df = ctx.staged("Procedure")
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("encounter.reference"),
        start=candidates("performedDateTime", "performedPeriod.start"),
        end=candidates(F.col("performedPeriod.end")),
        default_domain="Procedure",
        type_concept=EHR,
        parts=_one_part(F.col("code")),
        reason=status_reason(F.col("status"), ("entered-in-error", "not-done", "preparation")),
    )


def _category_codes(df_col: str) -> Column:
    from pyspark.sql import functions as F

    return F.flatten(
        F.transform(
            F.coalesce(F.col(df_col), F.array()),
            lambda c: F.coalesce(
                F.transform(c["coding"], lambda x: x["code"]), F.array().cast("array<string>")
            ),
        )
    )


def _is_measurement(category_col: str) -> Column:
    from pyspark.sql import functions as F

    codes = _category_codes(category_col)
    return F.exists(codes, lambda c: c.isin(*MEASUREMENT_CATEGORIES))


def flatten_observation(ctx: MappingContext) -> DataFrame:
    """IG MeasurementMap/ObservationMap; each component is its own part (and row).

    The Observation's own code gives a row when it has a value or no components: a panel
    that only groups components (blood pressure) yields the component rows alone.
    `issued` stands in for a missing effective time, rather than losing the result.
    """
    from pyspark.sql import functions as F

    df = ctx.staged("Observation")
    own = part(
        F.lit(""),
        F.col("code"),
        F.col("valueQuantity"),
        F.col("valueCodeableConcept"),
        F.col("valueString"),
        F.col("valueBoolean"),
        F.col("valueInteger"),
        F.col("referenceRange"),
    )
    components = F.transform(
        F.coalesce(F.col("component"), F.array()),
        lambda c, i: part(
            F.concat(F.lit("component["), i.cast("string"), F.lit("]")),
            c["code"],
            c["valueQuantity"],
            c["valueCodeableConcept"],
            c["valueString"],
            c["valueBoolean"],
            c["valueInteger"],
            c["referenceRange"],
        ),
    )
    has_value = (
        F.col("valueQuantity").isNotNull()
        | F.col("valueCodeableConcept").isNotNull()
        | F.col("valueString").isNotNull()
        | F.col("valueBoolean").isNotNull()
        | F.col("valueInteger").isNotNull()
    )
    parts = F.when(F.size(components) == 0, F.array(own)).otherwise(
        F.when(has_value, F.concat(F.array(own), components)).otherwise(components)
    )
    measurement = _is_measurement("category")
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("encounter.reference"),
        start=candidates(
            "effectiveDateTime", "effectivePeriod.start", "effectiveInstant", "issued"
        ),
        end=None,
        default_domain=F.when(measurement, F.lit("Measurement")).otherwise(F.lit("Observation")),
        type_concept=F.when(_category_has("category", "laboratory"), F.lit(LAB)).otherwise(
            F.lit(EHR)
        ),
        parts=parts,
        reason=status_reason(F.col("status"), ("entered-in-error", "cancelled")),
    )


def _category_has(category_col: str, code: str) -> Column:
    from pyspark.sql import functions as F

    return F.array_contains(_category_codes(category_col), code)


def flatten_diagnostic_report(ctx: MappingContext) -> DataFrame:
    """The report's own code as a measurement; its results are Observations of their own.
    `issued` stands in for a missing effective time (KR Core reports carry only issued)."""
    from pyspark.sql import functions as F

    df = ctx.staged("DiagnosticReport")
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("encounter.reference"),
        start=candidates("effectiveDateTime", "effectivePeriod.start", "issued"),
        end=None,
        default_domain="Measurement",
        type_concept=F.when(_category_has("category", "LAB"), F.lit(LAB)).otherwise(F.lit(EHR)),
        parts=_one_part(F.col("code")),
        reason=status_reason(F.col("status"), ("entered-in-error", "cancelled")),
    )


def _with_medication_codings(ctx: MappingContext, df: DataFrame) -> DataFrame:
    """Add `_medication`: the resource's own medication codings, else the referenced
    Medication's code (joined on site and id). A Medication not in the export gives none."""
    from pyspark.sql import functions as F

    medications = ctx.staged("Medication").select(
        F.col("_site").alias("_m_site"),
        F.col("id").alias("_m_id"),
        F.col("code").alias("_m_code"),
    )
    target = reference_id(F.col("medicationReference.reference"), "Medication")
    joined = df.join(
        medications, (F.col("_site") == F.col("_m_site")) & (target == F.col("_m_id")), "left"
    )
    own = F.col("medicationCodeableConcept")
    chosen = F.when(F.size(codings(own)) > 0, own).otherwise(F.col("_m_code"))
    return joined.withColumn("_medication", chosen).drop("_m_site", "_m_id", "_m_code")


def flatten_medication_request(ctx: MappingContext) -> DataFrame:
    from pyspark.sql import functions as F

    df = _with_medication_codings(ctx, ctx.staged("MedicationRequest"))
    supply = F.col("dispenseRequest")
    # IG f2o-060: only realised orders; a proposal or plan was never prescribed.
    reason = F.coalesce(
        F.when(F.col("doNotPerform"), F.lit("do not perform")),
        status_reason(F.col("status"), ("entered-in-error", "cancelled", "draft")),
        status_reason(F.col("intent"), ("proposal", "plan"), "intent"),
    )
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("encounter.reference"),
        start=candidates(F.col("authoredOn")),
        end=candidates(supply["validityPeriod"]["end"]),
        default_domain="Drug",
        type_concept=EHR_PRESCRIPTION,
        parts=_one_part(F.col("_medication")),
        reason=reason,
        quantity=supply["quantity"]["value"],
        days_supply=days(supply["expectedSupplyDuration"]),
        refills=supply["numberOfRepeatsAllowed"],
        route=first(F.col("dosageInstruction"))["route"],
    )


def flatten_medication_administration(ctx: MappingContext) -> DataFrame:
    from pyspark.sql import functions as F

    df = _with_medication_codings(ctx, ctx.staged("MedicationAdministration"))
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("context.reference"),
        start=candidates("effectiveDateTime", "effectivePeriod.start"),
        end=candidates(F.col("effectivePeriod.end")),
        default_domain="Drug",
        type_concept=EHR_ADMINISTRATION_RECORD,
        parts=_one_part(F.col("_medication")),
        reason=status_reason(F.col("status"), ("entered-in-error", "not-done")),
        quantity=F.col("dosage.dose.value"),
        route=F.col("dosage.route"),
    )


def flatten_medication_statement(ctx: MappingContext) -> DataFrame:
    """IG MedicationMap (written for MedicationStatement)."""
    from pyspark.sql import functions as F

    df = _with_medication_codings(ctx, ctx.staged("MedicationStatement"))
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("context.reference"),
        start=candidates("effectiveDateTime", "effectivePeriod.start"),
        end=candidates(F.col("effectivePeriod.end")),
        default_domain="Drug",
        type_concept=PATIENT_SELF_REPORT,
        parts=_one_part(F.col("_medication")),
        reason=status_reason(F.col("status"), ("entered-in-error", "not-taken")),
        route=first(F.col("dosage"))["route"],
    )


def flatten_medication_dispense(ctx: MappingContext) -> DataFrame:
    from pyspark.sql import functions as F

    df = _with_medication_codings(ctx, ctx.staged("MedicationDispense"))
    return resource_frame(
        df,
        patient=F.col("subject.reference"),
        visit=F.col("context.reference"),
        start=candidates("whenHandedOver", "whenPrepared"),
        end=None,
        default_domain="Drug",
        type_concept=EHR_PRESCRIPTION,
        parts=_one_part(F.col("_medication")),
        reason=status_reason(F.col("status"), ("entered-in-error", "cancelled", "declined")),
        quantity=F.col("quantity.value"),
        days_supply=days(F.col("daysSupply")),
        route=first(F.col("dosageInstruction"))["route"],
    )


def flatten_immunization(ctx: MappingContext) -> DataFrame:
    """IG ImmunizationMap: vaccineCode (CVX) as a drug; a secondary source is self-reported."""
    from pyspark.sql import functions as F

    df = ctx.staged("Immunization")
    reported = F.col("primarySource") == F.lit(False)
    return resource_frame(
        df,
        patient=F.col("patient.reference"),
        visit=F.col("encounter.reference"),
        start=candidates(F.col("occurrenceDateTime")),
        end=candidates(F.col("occurrenceDateTime")),
        default_domain="Drug",
        type_concept=F.when(reported, F.lit(PATIENT_SELF_REPORT)).otherwise(
            F.lit(EHR_ADMINISTRATION_RECORD)
        ),
        parts=_one_part(F.col("vaccineCode")),
        reason=status_reason(F.col("status"), ("entered-in-error", "not-done")),
        quantity=F.col("doseQuantity.value"),
        route=F.col("route"),
    )


def flatten_device(ctx: MappingContext) -> DataFrame:
    """R4 Device has no period of use: manufactureDate (Synthea writes the start there)."""
    from pyspark.sql import functions as F

    df = ctx.staged("Device")
    return resource_frame(
        df,
        patient=F.col("patient.reference"),
        visit=None,
        start=candidates(F.col("manufactureDate")),
        end=None,
        default_domain="Device",
        type_concept=EHR,
        parts=_one_part(F.col("type")),
        reason=status_reason(F.col("status"), ("entered-in-error",)),
    )


def _allergy_concept(allergy_type: Column, category: Column) -> Column:
    from pyspark.sql import functions as F

    result = F.lit(NO_MATCHING_CONCEPT).cast("long")
    for (kind, name), concept in ALLERGY_CATEGORY_CONCEPTS.items():
        result = F.when((allergy_type == kind) & (category == name), F.lit(concept)).otherwise(
            result
        )
    return result


def flatten_allergy(ctx: MappingContext) -> DataFrame:
    """IG AllergyMap: recordedDate (else onset); the category concept is the observation."""
    from pyspark.sql import functions as F

    df = ctx.staged("AllergyIntolerance")
    verification = first(F.col("verificationStatus.coding"))["code"]
    # A missing type is read as 'allergy', the common case, so the category still counts.
    kind = F.coalesce(F.col("type"), F.lit("allergy"))
    return resource_frame(
        df,
        patient=F.col("patient.reference"),
        visit=F.col("encounter.reference"),
        start=candidates("recordedDate", "onsetDateTime", "onsetPeriod.start"),
        end=None,
        default_domain="Observation",
        type_concept=EHR,
        parts=_one_part(F.col("code")),
        reason=status_reason(verification, ("entered-in-error", "refuted"), "verification"),
        fixed_concept=_allergy_concept(kind, first(F.col("category"))),
    )


FLATTENERS: tuple[Callable[[MappingContext], DataFrame], ...] = (
    flatten_condition,
    flatten_procedure,
    flatten_observation,
    flatten_diagnostic_report,
    flatten_medication_request,
    flatten_medication_administration,
    flatten_medication_statement,
    flatten_medication_dispense,
    flatten_immunization,
    flatten_device,
    flatten_allergy,
)


# --- the shared steps -------------------------------------------------------------------


def _resources(ctx: MappingContext) -> DataFrame:
    """All flattened resources with person and visit ids, datetimes and exclusion reason."""
    from pyspark.sql import functions as F

    resources = union_all([flatten(ctx) for flatten in FLATTENERS])
    resources = ctx.person_ids(resources, F.col("_patient_ref"))
    resources = ctx.visit_ids(resources, F.col("_visit_ref"))
    tz = ctx.config.timezone
    resources = resources.withColumn("_start", first_datetime(F.col("_start_raw"), tz))
    resources = resources.withColumn("_end", first_datetime(F.col("_end_raw"), tz))
    reason = F.coalesce(
        F.col("_status_reason"),
        first_reason(
            (F.col("person_id").isNull(), "patient not in staging"),
            (F.col("_start").isNull(), "no usable date"),
            (ctx.in_future(F.col("_start")), DATE_IN_FUTURE),
        ),
    )
    return resources.withColumn("_reason", reason)


def _route(domain: Column, concept_id: Column, default_domain: Column) -> Column:
    from pyspark.sql import functions as F

    known = domain.isin(*DOMAIN_TABLES)
    mapped = concept_id != NO_MATCHING_CONCEPT
    chosen = (
        F.when(mapped & known, domain)
        .when(mapped, F.lit(FALLBACK_DOMAIN))
        .otherwise(default_domain)
    )
    return _domain_table(chosen)


def _domain_table(domain: Column) -> Column:
    from pyspark.sql import functions as F

    result = F.lit(None).cast("string")
    for name, table in DOMAIN_TABLES.items():
        result = F.when(domain == name, F.lit(table)).otherwise(result)
    return result


def _operator(comparator: Column) -> Column:
    from pyspark.sql import functions as F

    result = F.lit(None).cast("long")
    for symbol, concept in COMPARATOR_CONCEPTS.items():
        result = F.when(comparator == symbol, F.lit(concept)).otherwise(result)
    return result


def _build(ctx: MappingContext) -> tuple[DataFrame, DataFrame]:
    from pyspark.sql import functions as F

    from vocabularies.mapping import map_code, map_codings

    # Materialised once: the exclusions and every vocabulary join below read it, and each
    # map_codings call scans its input again to build its lookup.
    resources = _resources(ctx).localCheckpoint()
    excluded = resources.where(F.col("_reason").isNotNull()).select(
        "_site",
        "_resource_type",
        "_fhir_id",
        F.col("_reason").alias("reason"),
        _domain_table(F.col("_default_domain")).alias("_table"),
    )
    medications = ctx.staged("Medication").select(
        "_site",
        "_resource_type",
        F.col("id").alias("_fhir_id"),
        F.lit(MEDICATION_REASON).alias("reason"),
        F.lit(DOMAIN_TABLES["Drug"]).alias("_table"),
    )
    events = resources.where(F.col("_reason").isNull()).select("*", F.explode("_parts").alias("_p"))
    events = events.select("*", "_p.*").drop("_parts", "_p").localCheckpoint()
    vocab = ctx.vocab
    # A value, route or unit code mapping to several concepts keeps the lowest, so none of
    # them multiplies rows (picked in the lookup, not with a window: no shuffle of the wide
    # event rows); only the event's own code may (one row per target).
    events = map_codings(events, "value_codings", vocab, "value", lowest_target=True)
    events = map_codings(events, "_route_codings", vocab, "route", lowest_target=True)
    events = map_codings(events, "codings", vocab, "code")
    events = map_code(events, "unit_system", "unit_code", vocab, "unit", lowest_target=True)
    return _project(events), excluded.unionByName(medications)


def _project(events: DataFrame) -> DataFrame:
    """The event columns every table module reads."""
    from pyspark.sql import functions as F

    is_allergy = F.col("_resource_type") == "AllergyIntolerance"
    # Allergy (IG Allergy.fml): the category's allergy concept is the observation and the
    # substance its value; without a known category the code itself is the observation.
    substance_as_value = is_allergy & (
        F.coalesce("_fixed_concept_id", F.lit(NO_MATCHING_CONCEPT)) != NO_MATCHING_CONCEPT
    )
    concept_id = F.when(substance_as_value, F.col("_fixed_concept_id")).otherwise(
        F.col("code_concept_id")
    )
    table = F.when(is_allergy, F.lit(DOMAIN_TABLES[FALLBACK_DOMAIN])).otherwise(
        _route(F.col("code_domain_id"), F.col("code_concept_id"), F.col("_default_domain"))
    )
    boolean_value = F.when(F.col("value_boolean"), F.lit(YES)).when(
        ~F.col("value_boolean"), F.lit(NO)
    )
    has_value_code = F.size("value_codings") > 0
    value_concept = (
        F.when(substance_as_value, F.col("code_concept_id"))
        .when(F.col("value_boolean").isNotNull(), boolean_value)
        .when(has_value_code, F.col("value_concept_id"))
        .otherwise(F.col("code_value_concept_id"))
    )
    suffix = F.concat(
        F.when(F.col("part") != "", F.concat(F.lit("/"), F.col("part"))).otherwise(F.lit("")),
        F.when(
            F.col("code_targets") > 1,
            F.concat(F.lit("/"), F.col("code_concept_id").cast("string")),
        ).otherwise(F.lit("")),
    )
    return events.select(
        "_site",
        "_resource_type",
        "_fhir_id",
        table.alias("_table"),
        F.concat(F.col("_fhir_id"), suffix).alias("source_key"),
        "person_id",
        "visit_occurrence_id",
        F.col("_start").alias("start_datetime"),
        F.col("_end").alias("end_datetime"),
        concept_id.cast("long").alias("concept_id"),
        F.col("code_source_value").alias("source_value"),
        F.col("code_source_concept_id").alias("source_concept_id"),
        "type_concept_id",
        F.col("value_number").alias("value_as_number"),
        F.coalesce(F.col("value_string"), F.col("value_boolean").cast("string")).alias(
            "value_as_string"
        ),
        value_concept.cast("long").alias("value_as_concept_id"),
        F.when(substance_as_value, F.col("code_source_value"))
        .otherwise(F.coalesce(F.col("value_source_value"), F.col("value_number").cast("string")))
        .alias("value_source_value"),
        F.when(F.col("unit_source_value").isNotNull(), F.col("unit_concept_id")).alias(
            "unit_concept_id"
        ),
        F.coalesce(F.col("unit_code"), F.col("unit_text")).alias("unit_source_value"),
        F.when(F.col("unit_source_value").isNotNull(), F.col("unit_source_concept_id")).alias(
            "unit_source_concept_id"
        ),
        _operator(F.col("comparator")).alias("operator_concept_id"),
        "range_low",
        "range_high",
        "quantity",
        "days_supply",
        "refills",
        F.when(F.col("route_source_value").isNotNull(), F.col("route_concept_id")).alias(
            "route_concept_id"
        ),
        "route_source_value",
        # For the run's coverage report (vocabularies.coverage), not for any table.
        F.col("code_system").alias("_code_system"),
        F.col("code_vocabulary_id").alias("_code_vocabulary_id"),
        F.col("code_display").alias("_code_display"),
        F.col("code_concept_id").alias("_code_concept_id"),
    )
