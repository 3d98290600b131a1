"""Explicit Spark schemas for FHIR R4 resources, one per resource type.

Staging parses every resource with `spark.read.schema(resource_schema(type)).json(...)`:
an explicit schema is faster than inference and gives every site the same columns, whatever
elements its export happens to use. The schemas are derived from the FHIR R4B definitions
shipped with `fhir.resources` (R4B is R4 plus corrections; the clinical resources read R4
data unchanged), generated once with `python -m omopflow.fhir_schema --write` and committed
under `omopflow/schemas/<ResourceType>.json.gz`, so a run never imports `fhir.resources`.

How FHIR maps to Spark:
- primitives: boolean -> boolean; integer, positiveInt, unsignedInt -> int; integer64 ->
  long; decimal -> double; every other primitive (date, dateTime, instant, time, string,
  uri, code, id, ...) -> string. Dates stay strings because FHIR allows partial dates
  ("2019", "2019-03") that are parsed later.
- complex types and backbone elements -> struct; repeated elements -> array.
- choice elements `value[x]` -> one field per variant, named as in FHIR JSON
  (`valueQuantity`, `valueString`, ...). Field names are FHIR JSON names (`class`).
- every schema starts with `resourceType` (string).
- primitive-extension siblings (`_birthDate`) are omitted.

Raw JSON instead of a struct: where a field is declared as a string but the JSON holds an
object, Spark's JSON reader keeps the object's JSON text, so nothing is lost and the text
can be parsed later with `from_json`. We use that for:
- resource-typed elements (`contained`, `Bundle.entry.resource`, `Parameters.parameter
  .resource`);
- recursion: a complex type is expanded at most once on a path from the resource root
  (`Identifier.assigner` -> `Reference.identifier` -> raw; `Questionnaire.item.item` ->
  raw), except `Extension`, expanded at most twice (`extension[].extension[]`, which US
  Core race and ethnicity need);
- extensions are expanded only on the resource itself (`Patient.extension`) and inside
  those extensions; `extension` of datatypes and backbone elements and every
  `modifierExtension` stay raw JSON. An expanded Extension has every `value[x]` variant,
  but a complex value is expanded at most two datatypes deep
  (`valueCodeableConcept.coding[].code`); deeper parts are raw JSON. Without these limits
  one Extension alone has thousands of leaf fields and a Patient schema tens of thousands.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import types
import typing
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructField, StructType

SCHEMA_PACKAGE = "omopflow.schemas"
SCHEMA_SUFFIX = ".json.gz"

# How many times a complex type may appear on one path from the resource root.
MAX_EXTENSION_NESTING = 2
MAX_OTHER_TYPE_REPEATS = 1
# How many datatypes deep a complex extension value is expanded.
MAX_EXTENSION_VALUE_DEPTH = 2

# Abstract bases that are not resource types of their own.
ABSTRACT_RESOURCES = frozenset({"Resource", "DomainResource"})


def _committed_resource_types() -> frozenset[str]:
    folder = resources.files(SCHEMA_PACKAGE)
    return frozenset(
        entry.name.removesuffix(SCHEMA_SUFFIX)
        for entry in folder.iterdir()
        if entry.name.endswith(SCHEMA_SUFFIX)
    )


RESOURCE_TYPES: frozenset[str] = _committed_resource_types()


def resource_schema(resource_type: str) -> StructType:
    """The committed Spark schema of one resource type; KeyError for an unknown type.

    Each call returns a new StructType: `StructType.add` changes a schema in place, so a
    shared cached object could be altered by one caller for all the others.

    A value of the wrong JSON type (`"active": "yes"`) makes the whole line a corrupt
    record (add a `_corrupt_record` string field and the `columnNameOfCorruptRecord`
    option to see it), but only if the query reads that field: Spark parses just the
    columns a query uses, so split staged and quarantined lines from one parse that reads
    every column (cache or write it), never from two differently pruned queries.
    """
    from pyspark.sql.types import StructType

    return StructType.fromJson(_schema_json(resource_type))


@cache
def _schema_json(resource_type: str) -> dict[str, Any]:
    if resource_type not in RESOURCE_TYPES:
        raise KeyError(f"no FHIR schema for resource type {resource_type!r}")
    path = resources.files(SCHEMA_PACKAGE).joinpath(resource_type + SCHEMA_SUFFIX)
    with path.open("rb") as handle:
        schema: dict[str, Any] = json.loads(gzip.decompress(handle.read()))
    return schema


# ---------------------------------------------------------------------------------------
# Generation from fhir.resources (only at `--write` time and in the freshness test)
# ---------------------------------------------------------------------------------------


class _Path(typing.NamedTuple):
    """Where the generator is: which types are above, and how deep inside an extension."""

    types_above: tuple[str, ...]
    extension_value_depth: int | None  # None outside extensions


def generate_resource_types() -> frozenset[str]:
    """Every concrete resource type that fhir.resources defines for R4B."""
    import importlib
    import pkgutil

    import fhir.resources.R4B as r4b

    found = set()
    for module_info in pkgutil.iter_modules(r4b.__path__):
        module = importlib.import_module(f"{r4b.__name__}.{module_info.name}")
        for value in vars(module).values():
            if _is_resource_class(value) and value.__module__ == module.__name__:
                found.add(value.get_resource_type())
    return frozenset(found - ABSTRACT_RESOURCES)


def _is_resource_class(value: object) -> bool:
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    return (
        isinstance(value, type)
        and issubclass(value, FHIRAbstractModel)
        and value.has_resource_base()
        and getattr(value, "__resource_type__", None) == value.__name__
    )


def generate_schema(resource_type: str) -> StructType:
    """Build the schema of one resource type from the fhir.resources R4B model."""
    from fhir.resources.R4B import get_fhir_model_class
    from pyspark.sql.types import StringType, StructField, StructType

    if resource_type in ABSTRACT_RESOURCES:
        raise KeyError(f"{resource_type!r} is abstract, not a resource type")
    try:
        model = get_fhir_model_class(resource_type)
    except ValueError as error:
        raise KeyError(f"unknown FHIR resource type {resource_type!r}") from error
    if not _is_resource_class(model):
        raise KeyError(f"{resource_type!r} is a FHIR datatype, not a resource type")
    path = _Path((resource_type,), None)
    fields = [StructField("resourceType", StringType()), *_model_fields(model, path)]
    return StructType(fields)


def _model_fields(model: Any, path: _Path) -> list[StructField]:
    from pyspark.sql.types import ArrayType, StructField

    by_json_name = {info.alias or name: info for name, info in model.model_fields.items()}
    fields = []
    for json_name in model.elements_sequence():
        repeated, inner = _unwrap(by_json_name[json_name].annotation)
        data_type = _element_type(model, json_name, inner, path)
        fields.append(StructField(json_name, ArrayType(data_type) if repeated else data_type))
    return fields


def _unwrap(annotation: Any) -> tuple[bool, Any]:
    """Strip Optional and List from a field annotation: (is repeated, element type)."""
    repeated = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        elif origin is list:
            repeated = True
            (annotation,) = typing.get_args(annotation)
        else:
            return repeated, annotation


def _element_type(parent: Any, json_name: str, annotation: Any, path: _Path) -> DataType:
    from fhir_core.types import FhirBase
    from pyspark.sql.types import StringType, StructType

    if not (isinstance(annotation, type) and issubclass(annotation, FhirBase)):
        return _primitive_type(annotation)
    model = annotation.get_model_klass()
    child = _child_path(parent, json_name, model, path)
    if child is None:
        return StringType()  # raw JSON text, see the module docstring
    return StructType(_model_fields(model, child))


def _child_path(parent: Any, json_name: str, model: Any, path: _Path) -> _Path | None:
    """The path inside `model` if it is expanded as a struct, None if it stays raw JSON."""
    type_name = model.__name__
    if model.has_resource_base() or type_name == "Resource":
        return None
    repeats = path.types_above.count(type_name)
    types_above = (*path.types_above, type_name)
    if type_name == "Extension":
        on_resource = parent.has_resource_base() and path.extension_value_depth is None
        nested = parent.__name__ == "Extension" and repeats < MAX_EXTENSION_NESTING
        if json_name == "extension" and (on_resource or nested):
            return _Path(types_above, 0)
        return None
    if repeats >= MAX_OTHER_TYPE_REPEATS:
        return None
    depth = path.extension_value_depth
    if depth is None:
        return _Path(types_above, None)
    if depth >= MAX_EXTENSION_VALUE_DEPTH:
        return None
    return _Path(types_above, depth + 1)


def _primitive_type(annotation: Any) -> DataType:
    from pyspark.sql.types import BooleanType, DoubleType, IntegerType, LongType, StringType

    spark_types: dict[str, DataType] = {
        "boolean": BooleanType(),
        "integer": IntegerType(),
        "positiveInt": IntegerType(),
        "unsignedInt": IntegerType(),
        "integer64": LongType(),
        "decimal": DoubleType(),
    }
    # Every other primitive (dates, times, strings, codes, uris, ids...) is text.
    return spark_types.get(_primitive_name(annotation), StringType())


def _primitive_name(annotation: Any) -> str:
    """The FHIR primitive name of a field annotation (`bool`, `Annotated[str, Code()]`...)."""
    if annotation is bool:
        return "boolean"
    for marker in getattr(annotation, "__metadata__", ()):
        name = getattr(marker, "__visit_name__", None)
        if name:
            return str(name)
    # uuid is pydantic's UUID4 (no FHIR marker); every other unmarked type is a string too.
    return "string"


# ---------------------------------------------------------------------------------------
# Command line: python -m omopflow.fhir_schema --write
# ---------------------------------------------------------------------------------------


def schema_bytes(schema: StructType) -> bytes:
    """Reproducible file content: sorted JSON, gzip without a timestamp or file name."""
    text = json.dumps(schema.jsonValue(), sort_keys=True, separators=(",", ":"))
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def write_schemas(folder: Path) -> int:
    """Regenerate every schema file in `folder`, removing stale ones; returns the count."""
    resource_types = generate_resource_types()
    for stale in folder.glob("*" + SCHEMA_SUFFIX):
        if stale.name.removesuffix(SCHEMA_SUFFIX) not in resource_types:
            stale.unlink()
    for resource_type in sorted(resource_types):
        target = folder / (resource_type + SCHEMA_SUFFIX)
        target.write_bytes(schema_bytes(generate_schema(resource_type)))
    return len(resource_types)


def leaf_count(data_type: DataType) -> int:
    """How many primitive columns a schema has (arrays and structs unrolled)."""
    from pyspark.sql.types import ArrayType, StructType

    if isinstance(data_type, StructType):
        return sum(leaf_count(field.dataType) for field in data_type.fields)
    if isinstance(data_type, ArrayType):
        return leaf_count(data_type.elementType)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omopflow.fhir_schema", description=__doc__)
    parser.add_argument("--write", action="store_true", help="regenerate omopflow/schemas/")
    parser.add_argument("--show", metavar="TYPE", help="print one type's leaf count and tree")
    args = parser.parse_args(argv)
    if args.write:
        folder = Path(__file__).resolve().parent / "schemas"
        print(f"wrote {write_schemas(folder)} schemas to {folder}")
    if args.show:
        schema = generate_schema(args.show)
        print(f"{args.show}: {leaf_count(schema)} leaf fields")
        print(schema.treeString())
    if not (args.write or args.show):
        parser.print_usage()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
