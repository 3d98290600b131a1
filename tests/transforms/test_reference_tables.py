"""LOCATION, CARE_SITE, PROVIDER, DEATH, VISIT_DETAIL and the links person/visit take from
them: tiny hand-written FHIR, one corner case per test."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.fhir_fixtures import encounter, patient

KEY = b"k" * 32
NPI = "http://hl7.org/fhir/sid/us-npi"
SYNTHEA = "https://github.com/synthetichealth/synthea"
KR_ROAD = "http://www.hl7korea.or.kr/fhir/krcore/StructureDefinition/krcore-roadNameAddress"


def address(**fields: Any) -> dict[str, Any]:
    body = {
        "line": ["633 Abernathy Landing"],
        "city": "Emporia",
        "state": "KS",
        "postalCode": "66801-2504",
        "country": "US",
    }
    body.update(fields)
    return body


def organization(oid: str, **fields: Any) -> dict[str, Any]:
    body = {"resourceType": "Organization", "id": oid, "name": "GENERAL HOSPITAL"}
    body.update(fields)
    return body


def location(lid: str, **fields: Any) -> dict[str, Any]:
    body = {"resourceType": "Location", "id": lid, "name": "WARD 3"}
    body.update(fields)
    return body


def practitioner(pid: str, npi: str = "9999908392", **fields: Any) -> dict[str, Any]:
    body = {
        "resourceType": "Practitioner",
        "id": pid,
        "identifier": [{"system": NPI, "value": npi}],
        "name": [{"family": "Emard", "given": ["Irvin"], "prefix": ["Dr."]}],
        "gender": "female",
        "birthDate": "1970-05-06",
    }
    body.update(fields)
    return body


def role(rid: str, **fields: Any) -> dict[str, Any]:
    body = {"resourceType": "PractitionerRole", "id": rid}
    body.update(fields)
    return body


def context(
    spark: Any, *resources: dict[str, Any], site: str = "test", as_of: date | None = None
) -> Any:
    from omopflow.config import RunConfig
    from omopflow.ids import IdAllocator
    from omopflow.staging import stage_in_memory
    from transforms.base import MappingContext

    staged, quarantined = stage_in_memory(spark, [json.dumps(r) for r in resources], site)
    assert quarantined.count() == 0, "fixture does not stage"
    config = RunConfig(input_dir=Path("."), vocab_dirs=(), out_dir=Path("."))
    if as_of is not None:
        config = replace(config, as_of=as_of)
    ctx = MappingContext(spark, config, [], IdAllocator.open(spark, None), KEY)
    ctx._staged.update(staged)
    return ctx


def build(ctx: Any, *tables: str) -> dict[str, Any]:
    """Run the named table modules in registry order; their outputs by table."""
    from transforms.registry import TABLE_MODULES

    outputs = {}
    for module in TABLE_MODULES:
        if module.TABLE in tables:
            output = module.build(ctx)
            ctx.outputs[output.table] = output.rows
            outputs[output.table] = output
    return outputs


def rows(output: Any, *columns: str) -> list[dict[str, Any]]:
    return [r.asDict() for r in output.rows.select(*columns).orderBy(*columns).collect()]


def reasons(output: Any) -> dict[str, str]:
    return {r["_fhir_id"]: r["reason"] for r in output.excluded.collect()}


# LOCATION


def test_location_publishes_only_generalised_fields(spark: Any) -> None:
    ctx = context(spark, patient("p1", address=[address()]))
    out = build(ctx, "location")["location"]
    (row,) = out.rows.collect()
    assert (row["city"], row["state"], row["zip"], row["country_source_value"]) == (
        "EMPORIA",
        "KS",
        "668",
        "US",
    )
    assert row["address_1"] is None and row["latitude"] is None and row["longitude"] is None
    assert "Abernathy" not in row["location_source_value"]


def test_patients_on_different_streets_of_one_town_share_a_location(spark: Any) -> None:
    ctx = context(
        spark,
        patient("p1", address=[address(line=["1 Main St"])]),
        patient("p2", address=[address(line=["9 Elm Rd"], postalCode="66899")]),
    )
    out = build(ctx, "location", "person")
    assert out["location"].rows.count() == 1
    linked = {r["location_id"] for r in out["person"].rows.collect()}
    assert len(linked) == 1 and None not in linked


def test_same_generalised_address_from_two_sites_is_one_location(spark: Any) -> None:
    from omopflow.staging import stage_in_memory

    ctx = context(spark, patient("p1", address=[address()]), site="a")
    other, _ = stage_in_memory(spark, [json.dumps(patient("p1", address=[address()]))], "b")
    ctx._staged["Patient"] = ctx._staged["Patient"].unionByName(other["Patient"])
    assert build(ctx, "location")["location"].rows.count() == 1


def test_korean_postal_code_keeps_three_digits_and_district_fills_county(spark: Any) -> None:
    district = {"url": "district", "valueString": "서울특별시 강남구"}
    kr = {
        "extension": [{"url": KR_ROAD, "extension": [district]}],
        "text": "서울특별시 강남구 일원로 81 (일원동)",
        "postalCode": "06351",
    }
    ctx = context(spark, patient("p1", address=[kr]))
    (row,) = build(ctx, "location")["location"].rows.collect()
    assert (row["zip"], row["county"], row["city"]) == ("063", "서울특별시 강남구", None)


def test_old_address_is_ignored_and_home_preferred(spark: Any) -> None:
    addresses = [
        address(use="old", city="Topeka"),
        address(use="work", city="Wichita"),
        address(use="home", city="Salina"),
    ]
    ctx = context(spark, patient("p1", address=addresses))
    out = build(ctx, "location", "person")
    cities = {r["city"] for r in out["location"].rows.collect()}
    assert cities == {"SALINA"}


def test_address_without_generalised_fields_gives_no_location(spark: Any) -> None:
    ctx = context(spark, patient("p1", address=[{"line": ["1 Main St"]}]))
    out = build(ctx, "location", "person")
    assert out["location"].rows.count() == 0
    assert rows(out["person"], "location_id") == [{"location_id": None}]


# CARE_SITE


def test_organization_becomes_care_site_with_name_location_and_hashed_source(spark: Any) -> None:
    prov = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov"}]}  # fmt: skip
    ctx = context(spark, organization("o1", address=[address()], type=[prov]))
    out = build(ctx, "location", "care_site")
    (row,) = out["care_site"].rows.collect()
    assert row["care_site_name"] == "GENERAL HOSPITAL"
    assert row["location_id"] == out["location"].rows.first()["location_id"]
    assert (row["place_of_service_concept_id"], row["place_of_service_source_value"]) == (0, "prov")
    assert row["care_site_source_value"] not in (None, "o1")
    assert "o1" not in row["care_site_source_value"]


def test_location_type_maps_to_place_of_service(spark: Any) -> None:
    from transforms.care_site import HOSPITAL, ROLE_CODE

    hosp = {"coding": [{"system": ROLE_CODE, "code": "HOSP"}]}
    ctx = context(spark, location("l1", type=[hosp]))
    (row,) = build(ctx, "care_site")["care_site"].rows.collect()
    assert row["place_of_service_concept_id"] == HOSPITAL


def test_location_of_kind_mode_is_excluded_with_reason(spark: Any) -> None:
    ctx = context(spark, location("amb", mode="kind"))
    out = build(ctx, "care_site")["care_site"]
    assert out.rows.count() == 0
    assert reasons(out) == {"amb": "Location describes a kind of place, not a site"}


# PROVIDER


def test_practitioner_is_published_without_name_or_identifiers(spark: Any) -> None:
    from vocabularies.concepts import FEMALE

    ctx = context(spark, practitioner("d1"))
    (row,) = build(ctx, "provider")["provider"].rows.collect()
    assert row["provider_name"] is None and row["npi"] is None and row["dea"] is None
    assert "9999908392" not in row["provider_source_value"]
    assert "d1" not in row["provider_source_value"]
    assert (row["gender_concept_id"], row["year_of_birth"]) == (FEMALE, 1970)


def test_published_name_policy_writes_given_and_family(spark: Any) -> None:
    from transforms import provider

    ctx = context(spark, practitioner("d1"))
    out = provider.build(ctx, name_policy=provider.NAMES_PUBLISHED)
    assert rows(out, "provider_name") == [{"provider_name": "Irvin Emard"}]


def test_unknown_name_policy_is_refused(spark: Any) -> None:
    from transforms import provider

    with pytest.raises(ValueError, match="name policy"):
        provider.build(context(spark, practitioner("d1")), name_policy="initials")


def test_role_by_npi_gives_specialty_and_care_site_and_is_merged(spark: Any) -> None:
    from transforms.provider import MERGED_ROLE

    gp = {"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "208D00000X"}]}
    ctx = context(
        spark,
        practitioner("d1"),
        organization("o1", identifier=[{"system": SYNTHEA, "value": "o1"}]),
        role(
            "r1",
            practitioner={"identifier": {"system": NPI, "value": "9999908392"}},
            organization={"identifier": {"system": SYNTHEA, "value": "o1"}},
            specialty=[gp],
        ),
    )
    out = build(ctx, "care_site", "provider")
    (row,) = out["provider"].rows.collect()
    assert row["specialty_source_value"] == "208D00000X"
    assert row["care_site_id"] == out["care_site"].rows.first()["care_site_id"]
    assert reasons(out["provider"]) == {"r1": MERGED_ROLE}


def test_role_without_staged_practitioner_is_excluded(spark: Any) -> None:
    from transforms.provider import ROLE_WITHOUT_PRACTITIONER

    ctx = context(spark, role("r1", practitioner={"reference": "Practitioner/nobody"}))
    out = build(ctx, "provider")["provider"]
    assert reasons(out) == {"r1": ROLE_WITHOUT_PRACTITIONER}


def test_identifier_shared_by_two_practitioners_links_to_neither(spark: Any) -> None:
    ctx = context(
        spark,
        practitioner("d1", npi="123"),
        practitioner("d2", npi="123"),
        role("r1", practitioner={"identifier": {"system": NPI, "value": "123"}}),
    )
    out = build(ctx, "provider")["provider"]
    assert out.rows.count() == 2
    assert reasons(out) == {"r1": "practitioner not in staging"}


def test_provider_ids_resolve_conditional_and_role_references(spark: Any) -> None:
    from pyspark.sql import functions as F

    from transforms.fhir import as_reference
    from transforms.provider import provider_ids

    ctx = context(
        spark, practitioner("d1"), role("r1", practitioner={"reference": "Practitioner/d1"})
    )
    build(ctx, "provider")
    refs = spark.createDataFrame(
        [("test", f"Practitioner?identifier={NPI}|9999908392"), ("test", "PractitionerRole/r1")],
        "_site string, ref string",
    )
    found = provider_ids(ctx, refs, as_reference(F.col("ref")))
    ids = {r["provider_id"] for r in found.collect()}
    assert len(ids) == 1 and None not in ids


# DEATH


def test_deceased_datetime_gives_a_death_row_typed_ehr(spark: Any) -> None:
    from vocabularies.concepts import EHR

    ctx = context(spark, patient("p1", deceasedDateTime="2020-03-04T10:00:00+00:00"))
    out = build(ctx, "person", "death")["death"]
    (row,) = out.rows.collect()
    assert str(row["death_date"]) == "2020-03-04"
    assert row["death_type_concept_id"] == EHR


def test_deceased_true_without_date_is_excluded_and_person_kept(spark: Any) -> None:
    from transforms.death import NO_DATE

    ctx = context(spark, patient("p1", deceasedBoolean=True))
    out = build(ctx, "person", "death")
    assert out["death"].rows.count() == 0
    assert reasons(out["death"]) == {"p1": NO_DATE}
    assert out["person"].rows.count() == 1


def test_death_before_birth_is_excluded(spark: Any) -> None:
    from transforms.death import BEFORE_BIRTH

    ctx = context(spark, patient("p1", birthDate="1980-02-03", deceasedDateTime="1979-01-01"))
    out = build(ctx, "person", "death")["death"]
    assert out.rows.count() == 0
    assert reasons(out) == {"p1": BEFORE_BIRTH}


# FUTURE DATES: excluded at mapping, so one clock error does not block a release

RUN_DAY = date(2024, 1, 1)
LATER = "2024-06-01T10:00:00+00:00"


def test_a_birth_date_after_the_run_day_excludes_the_patient(spark: Any) -> None:
    ctx = context(spark, patient("p1"), patient("p2", birthDate="2024-06-01"), as_of=RUN_DAY)
    out = build(ctx, "person")["person"]
    assert out.rows.count() == 1
    assert reasons(out) == {"p2": "birth date in the future"}


def test_a_death_after_the_run_day_is_excluded_and_the_person_kept(spark: Any) -> None:
    from transforms.base import DATE_IN_FUTURE

    ctx = context(spark, patient("p1", deceasedDateTime=LATER), as_of=RUN_DAY)
    out = build(ctx, "person", "death")
    assert out["death"].rows.count() == 0
    assert reasons(out["death"]) == {"p1": DATE_IN_FUTURE}
    assert out["person"].rows.count() == 1


def test_visits_starting_after_the_run_day_are_excluded(spark: Any) -> None:
    from transforms.base import DATE_IN_FUTURE

    later = {"start": LATER, "end": LATER}
    today = {"start": "2024-01-01T23:00:00+00:00"}
    resources = [
        patient("p1"),
        encounter("e-later", "p1", period=later),
        encounter("e-today", "p1", period=today),
        encounter("e-stay", "p1"),
        nested("e-ward", "e-stay", period=later),
    ]
    out = build(
        context(spark, *resources, as_of=RUN_DAY), "person", "visit_occurrence", "visit_detail"
    )
    assert sorted(r["_fhir_id"] for r in out["visit_occurrence"].rows.collect()) == [
        "e-stay",
        "e-today",
    ]
    assert reasons(out["visit_occurrence"]) == {"e-later": DATE_IN_FUTURE}
    assert reasons(out["visit_detail"]) == {"e-ward": DATE_IN_FUTURE}


# VISIT_DETAIL


def nested(eid: str, parent: str, **fields: Any) -> dict[str, Any]:
    return encounter(eid, "p1", partOf={"reference": f"Encounter/{parent}"}, **fields)


def test_child_encounter_is_a_detail_of_its_parent_visit_not_a_visit(spark: Any) -> None:
    ctx = context(spark, patient("p1"), encounter("stay", "p1"), nested("ward", "stay"))
    out = build(ctx, "person", "visit_occurrence", "visit_detail")
    visits = out["visit_occurrence"].rows
    assert [r["_fhir_id"] for r in visits.collect()] == ["stay"]
    (detail,) = out["visit_detail"].rows.collect()
    assert detail["visit_occurrence_id"] == visits.first()["visit_occurrence_id"]
    assert detail["parent_visit_detail_id"] is None


def test_grandchild_links_to_root_visit_and_parent_detail(spark: Any) -> None:
    ctx = context(
        spark,
        patient("p1"),
        encounter("stay", "p1"),
        nested("ward", "stay"),
        nested("bed", "ward"),
    )
    out = build(ctx, "person", "visit_occurrence", "visit_detail")
    visit_id = out["visit_occurrence"].rows.first()["visit_occurrence_id"]
    details = {r["_fhir_id"]: r for r in out["visit_detail"].rows.collect()}
    assert {d["visit_occurrence_id"] for d in details.values()} == {visit_id}
    assert details["bed"]["parent_visit_detail_id"] == details["ward"]["visit_detail_id"]


def test_cyclic_part_of_encounters_stay_visits(spark: Any) -> None:
    ctx = context(spark, patient("p1"), nested("a", "b"), nested("b", "a"))
    out = build(ctx, "person", "visit_occurrence", "visit_detail")
    assert out["visit_occurrence"].rows.count() == 2
    assert out["visit_detail"].rows.count() == 0


def test_part_of_an_unstaged_encounter_stays_a_visit(spark: Any) -> None:
    ctx = context(spark, patient("p1"), nested("ward", "elsewhere"))
    out = build(ctx, "person", "visit_occurrence", "visit_detail")
    assert out["visit_occurrence"].rows.count() == 1
    assert out["visit_detail"].rows.count() == 0


def test_child_of_an_excluded_visit_is_excluded_with_reason(spark: Any) -> None:
    from transforms.visit_detail import NO_VISIT

    ctx = context(spark, patient("p1"), encounter("stay", "p1", period={}), nested("ward", "stay"))
    out = build(ctx, "person", "visit_occurrence", "visit_detail")
    assert reasons(out["visit_detail"]) == {"ward": NO_VISIT}


def test_visit_ids_send_events_of_a_nested_encounter_to_the_root_visit(spark: Any) -> None:
    from pyspark.sql import functions as F

    from transforms.fhir import as_reference
    from transforms.visit_detail import visit_ids

    ctx = context(spark, patient("p1"), encounter("stay", "p1"), nested("ward", "stay"))
    out = build(ctx, "person", "visit_occurrence", "visit_detail")
    events = spark.createDataFrame([("test", "Encounter/ward")], "_site string, ref string")
    (row,) = visit_ids(ctx, events, as_reference(F.col("ref"))).collect()
    assert row["visit_occurrence_id"] == out["visit_occurrence"].rows.first()["visit_occurrence_id"]


# Links filled in VISIT_OCCURRENCE


def test_visit_takes_care_site_from_location_and_provider_from_primary_performer(
    spark: Any,
) -> None:
    pprf = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                         "code": "PPRF"}]}]  # fmt: skip
    ctx = context(
        spark,
        patient("p1"),
        practitioner("other", npi="1"),
        practitioner("main", npi="2"),
        location("l1", identifier=[{"system": SYNTHEA, "value": "l1"}]),
        organization("o1"),
        encounter(
            "e1",
            "p1",
            participant=[
                {"individual": {"reference": "Practitioner/other"}},
                {"type": pprf, "individual": {"reference": f"Practitioner?identifier={NPI}|2"}},
            ],
            location=[{"location": {"reference": f"Location?identifier={SYNTHEA}|l1"}}],
            serviceProvider={"reference": "Organization/o1"},
        ),
    )
    out = build(ctx, "care_site", "provider", "person", "visit_occurrence")
    sites = {r["_fhir_id"]: r["care_site_id"] for r in out["care_site"].rows.collect()}
    providers = {r["_fhir_id"]: r["provider_id"] for r in out["provider"].rows.collect()}
    (visit,) = out["visit_occurrence"].rows.collect()
    assert (visit["care_site_id"], visit["provider_id"]) == (sites["l1"], providers["main"])


# LEDGER


def test_every_reference_resource_is_mapped_or_excluded(spark: Any) -> None:
    from omopflow.ledger import UNACCOUNTED, mapping_section
    from transforms.registry import NOT_MAPPED_REASON

    ctx = context(
        spark,
        patient("p1", address=[address()]),
        organization("o1", address=[address()]),
        location("l1"),
        location("kind", mode="kind"),
        practitioner("d1"),
        role("r1", practitioner={"reference": "Practitioner/d1"}),
        role("r2", practitioner={"reference": "Practitioner/gone"}),
    )
    outputs = build(ctx, "location", "care_site", "provider", "person", "death")
    section = mapping_section(ctx._staged, ctx.read_types, outputs.values(), NOT_MAPPED_REASON)
    assert section["excluded_by_reason"].get(UNACCOUNTED, 0) == 0
    assert section["resources_in"] == 7
    assert section["resources_mapped"] == 4  # patient, organization, location l1, practitioner
