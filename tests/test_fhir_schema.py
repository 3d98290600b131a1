"""The committed FHIR schemas: fresh, typed as FHIR says, and losing nothing from real files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from omopflow.fhir_schema import (
    RESOURCE_TYPES,
    generate_resource_types,
    generate_schema,
    leaf_count,
    resource_schema,
)

CORRUPT = "_corrupt_record"


def field_type(schema: StructType, dotted: str) -> DataType:
    """The type at a dotted path, looking through arrays (`identifier.assigner`)."""
    data_type: DataType = schema
    for name in dotted.split("."):
        while isinstance(data_type, ArrayType):
            data_type = data_type.elementType
        assert isinstance(data_type, StructType), f"{dotted}: {name} is not inside a struct"
        data_type = data_type[name].dataType
    return data_type


def lost_paths(value: Any, data_type: DataType, path: str) -> Iterator[str]:
    """JSON paths that the schema would drop or cannot hold (a string field keeps raw JSON)."""
    if isinstance(data_type, StringType):
        return
    if isinstance(data_type, ArrayType):
        if not isinstance(value, list):
            yield f"{path} (expected a list)"
            return
        for item in value:
            yield from lost_paths(item, data_type.elementType, path + "[]")
    elif isinstance(data_type, StructType):
        if not isinstance(value, dict):
            yield f"{path} (expected an object)"
            return
        field_types = {field.name: field.dataType for field in data_type.fields}
        for key, item in value.items():
            if key not in field_types:
                yield f"{path}.{key}"
            else:
                yield from lost_paths(item, field_types[key], f"{path}.{key}")
    elif isinstance(value, dict | list):
        yield f"{path} (a primitive holds structure)"


def test_lost_paths_finds_unknown_and_misshapen_elements() -> None:
    patient = {"resourceType": "Patient", "nickname": "x", "active": {}, "name": {"text": "x"}}
    assert sorted(lost_paths(patient, resource_schema("Patient"), "Patient")) == [
        "Patient.active (a primitive holds structure)",
        "Patient.name (expected a list)",
        "Patient.nickname",
    ]


def sample_resources(shared_data: Path) -> Iterator[dict[str, Any]]:
    bulk = shared_data / "fhir" / "synthea-bulk-10"
    for path in sorted(bulk.glob("*.000.ndjson")):
        with path.open(encoding="utf-8") as handle:
            yield from (json.loads(line) for line in handle if line.strip())
    for path in sorted((shared_data / "fhir" / "kr-core-examples").glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        yield resource
        yield from (entry["resource"] for entry in resource.get("entry", []))


def read(spark: Any, resource_type: str, path: Path, multiline: bool = False) -> Any:
    return (
        spark.read.schema(resource_schema(resource_type))
        .option("multiLine", multiline)
        .json(str(path))
    )


# --- the committed files ------------------------------------------------------------------


@pytest.mark.parametrize("resource_type", ["Patient", "Observation", "Encounter", "Bundle"])
def test_committed_schema_equals_fresh_generation(resource_type: str) -> None:
    assert resource_schema(resource_type) == generate_schema(resource_type)


def test_every_r4b_resource_type_has_a_committed_schema() -> None:
    assert generate_resource_types() == RESOURCE_TYPES
    assert {"Patient", "Encounter", "Bundle", "Parameters"} <= RESOURCE_TYPES
    assert not {"Resource", "DomainResource", "Extension", "CodeableConcept"} & RESOURCE_TYPES


def test_changing_a_returned_schema_does_not_change_the_next_one() -> None:
    resource_schema("Patient").add(CORRUPT, StringType())
    assert CORRUPT not in resource_schema("Patient").fieldNames()


def test_reading_a_schema_does_not_import_fhir_resources() -> None:
    # fhir.resources takes seconds to import; runs only read the committed files.
    code = (
        "import sys; from omopflow.fhir_schema import resource_schema; "
        "resource_schema('Patient'); print('fhir' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("name", ["Patiant", "CodeableConcept", "Resource", ""])
def test_unknown_resource_type_raises_key_error(name: str) -> None:
    with pytest.raises(KeyError, match="resource type"):
        resource_schema(name)


@pytest.mark.parametrize("name", ["Patiant", "CodeableConcept", "DomainResource"])
def test_generator_refuses_what_is_not_a_resource_type(name: str) -> None:
    with pytest.raises(KeyError):
        generate_schema(name)


# --- how FHIR maps to Spark -----------------------------------------------------------------


def test_primitives_map_to_spark_types() -> None:
    patient = resource_schema("Patient")
    observation = resource_schema("Observation")
    assert patient.fields[0] == StructField("resourceType", StringType())
    assert field_type(patient, "active") == BooleanType()
    assert field_type(patient, "multipleBirthInteger") == IntegerType()
    assert field_type(patient, "birthDate") == StringType()  # partial dates parsed later
    assert field_type(observation, "valueQuantity.value") == DoubleType()
    assert field_type(observation, "valueSampledData.dimensions") == IntegerType()  # positiveInt


def test_field_names_are_fhir_json_names_without_primitive_extensions() -> None:
    encounter = resource_schema("Encounter").fieldNames()
    assert "class" in encounter
    assert "class_fhir" not in encounter
    assert not [name for name in resource_schema("Patient").fieldNames() if "_" in name]


def test_choice_elements_have_one_field_per_variant() -> None:
    names = resource_schema("Observation").fieldNames()
    variants = [name for name in names if name.startswith("value")]
    assert {"valueQuantity", "valueCodeableConcept", "valueString", "valuePeriod"} <= set(variants)
    assert len(variants) == 11
    assert "value" not in names


def test_resource_typed_elements_stay_raw_json() -> None:
    assert field_type(resource_schema("Patient"), "contained") == ArrayType(StringType())
    assert field_type(resource_schema("Bundle"), "entry.resource") == StringType()
    assert field_type(resource_schema("Parameters"), "parameter.resource") == StringType()


def test_recursion_stops_after_one_repeat_of_a_type() -> None:
    patient = resource_schema("Patient")
    assert isinstance(field_type(patient, "identifier.assigner"), StructType)
    assert field_type(patient, "identifier.assigner.identifier") == StringType()
    assert field_type(resource_schema("Questionnaire"), "item.item") == ArrayType(StringType())


def test_extensions_nest_two_levels_on_the_resource_only() -> None:
    patient = resource_schema("Patient")
    assert field_type(patient, "extension.extension.valueCoding.code") == StringType()
    assert field_type(patient, "extension.extension.extension") == ArrayType(StringType())
    assert field_type(patient, "address.extension") == ArrayType(StringType())
    assert field_type(patient, "modifierExtension") == ArrayType(StringType())


def test_extension_values_keep_every_variant_two_datatypes_deep() -> None:
    extension = field_type(resource_schema("Patient"), "extension")
    assert isinstance(extension, ArrayType)
    assert isinstance(extension.elementType, StructType)
    names = extension.elementType.fieldNames()
    # R4's 49 value[x] types plus R4B's CodeableReference and RatioRange
    assert len([name for name in names if name.startswith("value")]) == 51
    patient = resource_schema("Patient")
    assert field_type(patient, "extension.valueCodeableConcept.coding.code") == StringType()
    assert field_type(patient, "extension.valueReference.identifier.type") == StringType()


@pytest.mark.parametrize("resource_type", ["Patient", "Observation", "Encounter"])
def test_schemas_stay_small_enough_to_parse_fast(resource_type: str) -> None:
    # Unbounded recursion gives tens of thousands of leaves; today's rules give ~1,300-1,800.
    assert leaf_count(resource_schema(resource_type)) < 2500


# --- parsing real files -------------------------------------------------------------------


def test_synthea_patient_parses_race_birth_date_and_gender(spark: Any, shared_data: Path) -> None:
    path = shared_data / "fhir" / "synthea-bulk-10" / "Patient.000.ndjson"
    race_url = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
    patients = read(spark, "Patient", path).select(
        "gender",
        "birthDate",
        F.filter("extension", lambda ext: ext.url == race_url)[0].alias("race"),
    )
    omb_category = F.filter("race.extension", lambda ext: ext.url == "ombCategory")[0]
    race_codes = patients.select(omb_category["valueCoding"]["code"].alias("code"))
    assert patients.count() == 13
    assert patients.filter(F.col("gender").isin("male", "female")).count() == 13
    assert patients.filter(F.col("birthDate").rlike(r"^\d{4}-\d{2}-\d{2}$")).count() == 13
    assert {row[0] for row in race_codes.distinct().collect()} <= {
        "2106-3", "2054-5", "2028-9", "1002-5", "2076-8", "2131-1",
    }  # fmt: skip
    assert race_codes.filter(F.col("code").isNull()).count() == 0


def test_synthea_encounter_class_and_medication_code_parse(spark: Any, shared_data: Path) -> None:
    bulk = shared_data / "fhir" / "synthea-bulk-10"
    encounters = read(spark, "Encounter", bulk / "Encounter.000.ndjson")
    orders = read(spark, "MedicationRequest", bulk / "MedicationRequest.000.ndjson")
    assert encounters.filter(F.col("class.code") == "AMB").count() > 0
    assert encounters.filter(F.col("class.code").isNull()).count() == 0
    rxnorm = F.col("medicationCodeableConcept.coding")[0]["code"]
    assert orders.filter(rxnorm == "314076").count() > 0


def test_kr_core_patient_keeps_road_name_address_as_raw_json(spark: Any, shared_data: Path) -> None:
    path = shared_data / "fhir" / "kr-core-examples" / "Patient-krcore-patient-example-01.json"
    row = (
        read(spark, "Patient", path, multiline=True)
        .select(
            "birthDate",
            F.col("identifier")[0]["type"]["coding"][0]["code"].alias("id_type"),
            F.col("address")[0]["extension"][0].alias("road_name"),
        )
        .first()
    )
    assert row is not None
    assert (row.birthDate, row.id_type) == ("2001-01-01", "MR")
    assert json.loads(row.road_name)["extension"][1] == {"url": "roadName", "valueString": "일원로"}


def test_bundle_entries_reparse_with_their_own_schema(spark: Any, shared_data: Path) -> None:
    path = shared_data / "fhir" / "kr-core-examples" / "bundle-krcore-examples.transaction.json"
    entries = read(spark, "Bundle", path, multiline=True).select(F.explode("entry.resource"))
    patients = entries.filter(F.get_json_object("col", "$.resourceType") == "Patient").select(
        F.from_json("col", resource_schema("Patient"))["birthDate"].alias("birthDate")
    )
    assert entries.count() == 17
    assert sorted(row.birthDate for row in patients.collect()) == ["1971-11-11", "2001-01-01"]


def test_object_in_a_raw_json_field_keeps_its_content(spark: Any, tmp_path: Path) -> None:
    contained = {"resourceType": "Organization", "id": "org1", "name": "keep"}
    too_deep = {"url": "level3", "valueString": "keep"}
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "contained": [contained],
        "extension": [{"url": "level1", "extension": [{"url": "level2", "extension": [too_deep]}]}],
    }
    (tmp_path / "p.ndjson").write_text(json.dumps(patient) + "\n", encoding="utf-8")
    row = read(spark, "Patient", tmp_path / "p.ndjson").first()
    assert row is not None
    assert json.loads(row.contained[0]) == contained
    assert json.loads(row.extension[0].extension[0].extension[0]) == too_deep


def test_a_wrongly_typed_primitive_marks_the_line_corrupt(spark: Any, tmp_path: Path) -> None:
    # Staging relies on this to quarantine the line instead of losing the value.
    lines = [
        {"resourceType": "Patient", "id": "bad-boolean", "active": "yes"},
        {"resourceType": "Patient", "id": "bad-integer", "multipleBirthInteger": 1.5},
        {"resourceType": "Patient", "id": "good", "active": True, "multipleBirthInteger": 2},
    ]
    path = tmp_path / "p.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    schema = resource_schema("Patient").add(CORRUPT, StringType())
    parsed = spark.read.schema(schema).option("columnNameOfCorruptRecord", CORRUPT).json(str(path))
    # Spark parses only the selected fields: a check that selects a few misses the bad ones.
    every_field = F.hash(*parsed.columns).alias("every_field")
    flagged = parsed.select("id", F.col(CORRUPT).isNotNull().alias("corrupt"), every_field)
    flagged = flagged.collect()
    assert {row.id: row.corrupt for row in flagged} == {
        "bad-boolean": True,
        "bad-integer": True,
        "good": False,
    }


def test_every_sample_file_parses_without_corrupt_records(spark: Any, shared_data: Path) -> None:
    bulk = shared_data / "fhir" / "synthea-bulk-10"
    for path in sorted(bulk.glob("*.000.ndjson")):
        schema = resource_schema(path.name.split(".")[0])
        parsed = spark.read.schema(schema).option("mode", "FAILFAST").json(str(path))
        # Writing every column makes Spark parse every field; FAILFAST raises on a bad one.
        parsed.write.format("noop").mode("overwrite").save()


def test_parsing_loses_no_element_of_the_sample_files(shared_data: Path) -> None:
    schemas: dict[str, StructType] = {}
    lost: set[str] = set()
    for resource in sample_resources(shared_data):
        resource_type = resource["resourceType"]
        if resource_type not in schemas:
            schemas[resource_type] = resource_schema(resource_type)
        lost.update(lost_paths(resource, schemas[resource_type], resource_type))
    assert sorted(lost) == []
