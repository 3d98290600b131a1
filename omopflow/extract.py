"""Per-study extracts: the approved tables and columns of one release, for one study.

A study file (YAML) names the study, the approved tables and columns, an optional cohort
(concept sets expanded through CONCEPT_ANCESTOR, a date range, sites) and whether dates are
shifted. The extract is a separate folder of Parquet tables with its own DuckDB catalog:

- Person ids are re-keyed per study: persons are numbered 1..N in the order of a keyed hash
  of (study, person_id), on top of a study slot (slot * 2^32, slot from a keyed hash of the
  study name, 1..2^20), so ids stay below 2^53 (the OHDSI R tools' limit), never equal a
  warehouse id (those are below 2^32) and two studies' ids never meet: a second study whose
  slot is already taken by another study in the audit log is refused.
- Other row ids (visit_occurrence_id, provider_id, ...) become keyed hashes of (study, the
  table they identify, id), 52 bits; warehouse-wide pseudonyms (person_source_value, ...)
  are re-hashed per study. Nothing in an extract joins to another study's extract.
- Dates are optionally shifted per person (a keyed, stable shift within +-SHIFT_MAX_DAYS),
  with month_of_birth and day_of_birth left out then, as they would undo the shift.
- Any count written about the extract (its summary) goes through the small-cell rule.
- Every extract, refused or written, is appended to an audit log (JSONL): who, when, which
  study file, which release.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from omopflow import cdm
from omopflow.errors import UsageError
from omopflow.frames import union_all
from omopflow.pseudonym import date_shift_days, keyed_hash, pseudonym, shift_dates
from omopflow.report.cells import DEFAULT_MIN_CELL, check_threshold, shown
from omopflow.report.characterise import MAIN_CONCEPT
from omopflow.report.dictionary import VOCABULARY_TABLES, release_tables

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

STUDY_LABEL = "omopflow-study\x00"
SLOT_BITS = 20
RANK_BITS = 32
OTHER_ID_HEX_CHARS = 13  # 52 bits: below 2^53
SHIFT_MAX_DAYS = 182
AUDIT_LOG = Path("audit") / "extracts.jsonl"
CATALOG = "extract.duckdb"
MANIFEST = "extract.json"
# Warehouse-wide keyed hashes of source ids: the same person has the same value in every
# study, so they are re-hashed per study.
PSEUDONYM_COLUMNS = frozenset(
    {"person_source_value", "provider_source_value", "care_site_source_value"}
)
# Birth month and day would undo a date shift (birth_datetime is shifted instead).
UNSHIFTABLE_COLUMNS = frozenset({"month_of_birth", "day_of_birth"})
# The date of the record each event table's main concept describes: cohort entry.
EVENT_DATE = {
    "condition_occurrence": "condition_start_date",
    "drug_exposure": "drug_exposure_start_date",
    "procedure_occurrence": "procedure_date",
    "measurement": "measurement_date",
    "observation": "observation_date",
    "device_exposure": "device_exposure_start_date",
    "visit_occurrence": "visit_start_date",
    "specimen": "specimen_date",
}


class StudyError(UsageError):
    """A study file that cannot be used, or an extract that must not be written."""


@dataclass(frozen=True)
class Cohort:
    include: tuple[int, ...] = ()  # concept ids; their descendants count too
    exclude: tuple[int, ...] = ()
    tables: tuple[str, ...] = tuple(EVENT_DATE)
    date_from: date | None = None
    date_to: date | None = None
    sites: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    name: str
    tables: dict[str, tuple[str, ...]]
    cohort: Cohort | None = None
    shift_dates: bool = False
    min_cell: int = DEFAULT_MIN_CELL
    source: str = ""  # sha256 of the study file, for the audit log


@dataclass
class ExtractResult:
    study: str
    release: str
    out_dir: Path
    catalog: Path
    summary: dict[str, str] = field(default_factory=dict)  # counts as shown (small cells)


# --- study file ------------------------------------------------------------------------


def load_study(path: Path) -> Study:
    """Read and check a study file; every problem is a StudyError naming the field."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file not found: {path}")
    text = path.read_bytes()
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudyError(f"study file {path} is not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise StudyError(f"study file {path}: expected a mapping at the top")
    study = parse_study(content)
    return Study(**{**study.__dict__, "source": hashlib.sha256(text).hexdigest()})


def parse_study(content: Mapping[str, Any]) -> Study:
    unknown = set(content) - {"study", "tables", "cohort", "shift_dates", "min_cell"}
    if unknown:
        raise StudyError(f"study file: unknown fields {sorted(unknown)}")
    name = content.get("study")
    if not isinstance(name, str) or not name.strip():
        raise StudyError("study file: `study` (the study's name) is required")
    tables = content.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise StudyError("study file: `tables` must map each approved table to its columns")
    approved = {}
    for table, columns in tables.items():
        if not isinstance(columns, list) or not columns:
            raise StudyError(f"study file: table {table!r} needs a list of approved columns")
        approved[str(table)] = tuple(str(c) for c in columns)
    min_cell = content.get("min_cell", DEFAULT_MIN_CELL)
    if not isinstance(min_cell, int) or min_cell < 1:
        raise StudyError("study file: `min_cell` must be a whole number of at least 1")
    shift = content.get("shift_dates", False)
    if not isinstance(shift, bool):
        raise StudyError("study file: `shift_dates` must be true or false")
    cohort = content.get("cohort")
    return Study(
        name=name.strip(),
        tables=approved,
        cohort=parse_cohort(cohort) if cohort is not None else None,
        shift_dates=shift,
        min_cell=check_threshold(min_cell),
    )


def parse_cohort(content: Any) -> Cohort:
    if not isinstance(content, dict):
        raise StudyError("study file: `cohort` must be a mapping")
    unknown = set(content) - {"concepts", "exclude_concepts", "tables", "from", "to", "sites"}
    if unknown:
        raise StudyError(f"study file: unknown cohort fields {sorted(unknown)}")
    tables = tuple(content.get("tables") or EVENT_DATE)
    bad = [t for t in tables if t not in EVENT_DATE]
    if bad:
        raise StudyError(f"study file: cohort tables {bad} are not event tables {list(EVENT_DATE)}")
    cohort = Cohort(
        include=_concept_ids(content.get("concepts"), "concepts"),
        exclude=_concept_ids(content.get("exclude_concepts"), "exclude_concepts"),
        tables=tables,
        date_from=_date(content.get("from"), "from"),
        date_to=_date(content.get("to"), "to"),
        sites=tuple(str(s) for s in content.get("sites") or ()),
    )
    if cohort.date_from and cohort.date_to and cohort.date_from > cohort.date_to:
        raise StudyError("study file: cohort `from` is after `to`")
    return cohort


def _concept_ids(value: Any, name: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise StudyError(f"study file: cohort `{name}` must be a list of concept ids")
    return tuple(value)


def _date(value: Any, name: str) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise StudyError(f"study file: cohort `{name}` must be a date (YYYY-MM-DD)") from None


# --- the extract -----------------------------------------------------------------------


def extract(
    spark: SparkSession,
    study: Study,
    release_dir: Path,
    out_dir: Path,
    key: bytes,
    *,
    audit_log: Path,
    requested_by: str | None = None,
    crosswalk: Path | None = None,
) -> ExtractResult:
    """Write the study's extract of one release into `out_dir` (which must not exist yet).

    `crosswalk` (restricted) gives each person's site, needed only for a cohort by site.
    Every attempt is appended to `audit_log`, refused ones with their reason.
    """
    who = requested_by or _os_user()
    release_dir = Path(release_dir).resolve()
    entry: dict[str, Any] = {
        "study": study.name,
        "study_file_sha256": study.source,
        "release": release_dir.name,
        "requested_by": who,
        "out": str(out_dir),
        "tables": {t: list(c) for t, c in study.tables.items()},
        "shift_dates": study.shift_dates,
        "slot": study_slot(study.name, key),
    }
    try:
        check_slot(audit_log, study.name, entry["slot"])
        result = _write_extract(spark, study, release_dir, Path(out_dir), key, crosswalk)
    except StudyError as exc:
        append_audit(audit_log, {**entry, "status": "refused", "reason": str(exc)})
        raise
    append_audit(audit_log, {**entry, "status": "written", "summary": result.summary})
    return result


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return f"uid {os.getuid()}"


def _write_extract(
    spark: SparkSession,
    study: Study,
    release_dir: Path,
    out_dir: Path,
    key: bytes,
    crosswalk: Path | None,
) -> ExtractResult:
    if not release_dir.is_dir():
        raise StudyError(f"release not found: {release_dir}")
    if out_dir.exists():
        raise StudyError(f"extract folder already exists, not overwritten: {out_dir}")
    tables = {t: spark.read.parquet(str(release_dir / t)) for t in release_tables(release_dir)}
    check_approval(study, tables)
    persons = cohort_persons(spark, study.cohort, tables, crosswalk)
    keyed = person_keys(persons, study.name, key, study.shift_dates).cache()
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = {"persons": shown(keyed.count(), study.min_cell)}
    try:
        for table, columns in sorted(study.tables.items()):
            frame = extract_table(tables[table], table, columns, keyed, study, key)
            frame.coalesce(1).write.parquet(str(tmp / table))
            summary[f"rows:{table}"] = shown(frame.count(), study.min_cell)
        (tmp / MANIFEST).write_text(
            json.dumps(
                {
                    "study": study.name,
                    "release": release_dir.name,
                    "tables": {t: list(c) for t, c in sorted(study.tables.items())},
                    "shift_dates": study.shift_dates,
                    "min_cell": study.min_cell,
                    "summary": summary,
                },
                indent=2,
            )
            + "\n"
        )
        tmp.rename(out_dir)
        # DuckDB checks a view's files when it is created: only once they are in place.
        write_catalog(out_dir, sorted(study.tables))
    finally:
        keyed.unpersist()
        shutil.rmtree(tmp, ignore_errors=True)
    return ExtractResult(study.name, release_dir.name, out_dir, out_dir / CATALOG, summary)


def check_approval(study: Study, tables: Mapping[str, DataFrame]) -> None:
    """Approved tables and columns must exist; vocabulary tables are not extracted."""
    for table, columns in study.tables.items():
        if table in VOCABULARY_TABLES:
            raise StudyError(f"{table} is a vocabulary table: use the release's, not an extract")
        if table not in tables:
            raise StudyError(f"approved table {table!r} is not in the release")
        missing = [c for c in columns if c not in tables[table].columns]
        if missing:
            raise StudyError(f"approved columns {missing} are not in table {table!r}")
        if study.shift_dates and UNSHIFTABLE_COLUMNS & set(columns):
            raise StudyError(
                f"{sorted(UNSHIFTABLE_COLUMNS & set(columns))} would undo the date shift: "
                "approve birth_datetime or year_of_birth instead"
            )


# --- cohort ----------------------------------------------------------------------------


def cohort_persons(
    spark: SparkSession,
    cohort: Cohort | None,
    tables: Mapping[str, DataFrame],
    crosswalk: Path | None,
) -> DataFrame:
    """The person_ids of the study: everyone, or those meeting the cohort's criteria."""
    from pyspark.sql import functions as F

    if "person" not in tables:
        raise StudyError("the release has no person table")
    persons = tables["person"].select("person_id")
    if cohort is None:
        return persons
    if cohort.include:
        persons = persons.join(_with_concepts(spark, cohort, tables, cohort.include), "person_id")
    if cohort.exclude:
        excluded = _with_concepts(spark, cohort, tables, cohort.exclude)
        persons = persons.join(excluded, "person_id", "left_anti")
    if cohort.sites:
        if crosswalk is None or not Path(crosswalk).is_dir():
            raise StudyError("a cohort by site needs the crosswalk (restricted/crosswalk)")
        sites = (
            spark.read.parquet(str(crosswalk))
            .where((F.col("omop_table") == "person") & F.col("site").isin(list(cohort.sites)))
            .select(F.col("omop_id").alias("person_id"))
        )
        persons = persons.join(sites, "person_id", "left_semi")
    return persons.distinct()


def concept_set(
    spark: SparkSession, tables: Mapping[str, DataFrame], ids: tuple[int, ...]
) -> DataFrame:
    """The concepts and all their descendants (CONCEPT_ANCESTOR), as one column concept_id."""
    from pyspark.sql import functions as F

    roots = spark.createDataFrame([(i,) for i in ids], "concept_id long")
    if "concept_ancestor" not in tables:
        raise StudyError("the release has no concept_ancestor table: concept sets need it")
    descendants = (
        tables["concept_ancestor"]
        .join(roots.withColumnRenamed("concept_id", "ancestor_concept_id"), "ancestor_concept_id")
        .select(F.col("descendant_concept_id").cast("long").alias("concept_id"))
    )
    # A concept is its own descendant even where a partial vocabulary lacks the self row.
    return roots.unionByName(descendants).distinct()


def _with_concepts(
    spark: SparkSession, cohort: Cohort, tables: Mapping[str, DataFrame], ids: tuple[int, ...]
) -> DataFrame:
    """Persons with a record of one of the concepts (or a descendant) within the dates."""
    from pyspark.sql import functions as F

    concepts = F.broadcast(concept_set(spark, tables, ids))
    found = []
    for table in cohort.tables:
        if table not in tables:
            continue
        when = F.col(EVENT_DATE[table])
        records = tables[table].select(
            "person_id", F.col(f"{MAIN_CONCEPT[table]}_concept_id").alias("concept_id"), when
        )
        if cohort.date_from:
            records = records.where(when >= F.lit(cohort.date_from))
        if cohort.date_to:
            records = records.where(when <= F.lit(cohort.date_to))
        found.append(records.join(concepts, "concept_id", "left_semi").select("person_id"))
    if not found:
        return spark.createDataFrame([], "person_id long")
    return union_all(found).distinct()


# --- keys ------------------------------------------------------------------------------


def study_slot(study: str, key: bytes) -> int:
    """1..2^20, from a keyed hash of the study name: the high part of its person ids."""
    digest = hashlib.sha256(key + STUDY_LABEL.encode() + study.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) % (1 << SLOT_BITS) + 1


def person_keys(persons: DataFrame, study: str, key: bytes, shift: bool) -> DataFrame:
    """person_id -> study_person_id (and the date shift), numbered in keyed-hash order."""
    from pyspark.sql import functions as F

    from omopflow.ids import sequence

    message = F.concat(F.lit(STUDY_LABEL + study + "\x00"), F.col("person_id").cast("string"))
    ordered = persons.select("person_id", keyed_hash(message, key).alias("_order"))
    base = study_slot(study, key) << RANK_BITS
    numbered = sequence(ordered, ["_order"], base, "study_person_id").drop("_order")
    if shift:
        numbered = numbered.withColumn("_shift", date_shift_days(message, key, SHIFT_MAX_DAYS))
    return numbered


def _other_id(column: Column, family: str, study: str, key: bytes) -> Column:
    from pyspark.sql import functions as F

    message = F.concat(F.lit(f"{STUDY_LABEL}{study}\x00{family}\x00"), column.cast("string"))
    digest = F.substring(keyed_hash(message, key), 1, OTHER_ID_HEX_CHARS).alias("_hex")
    return F.when(column.isNull(), F.lit(None)).otherwise(F.conv(digest, 16, 10).cast("long"))


def id_family(table: str, column: str) -> str | None:
    """The table a non-concept `*_id` column identifies (None: not a row id)."""
    if not column.endswith("_id") or column.endswith("_concept_id") or column == "person_id":
        return None
    spec = {f.name: f for f in cdm.table_fields(table)} if table in cdm.tables() else {}
    found = spec.get(column)
    if found and found.fk_table and found.fk_table != "concept":
        return found.fk_table
    if found and found.primary_key:
        return table
    return column.removesuffix("_id")


def extract_table(
    df: DataFrame,
    table: str,
    columns: tuple[str, ...],
    keyed: DataFrame,
    study: Study,
    key: bytes,
) -> DataFrame:
    """The approved columns of one table, for the cohort's persons, with study keys."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampNTZType, TimestampType

    if "person_id" in df.columns:
        df = df.join(keyed, "person_id")  # inner: only the cohort's persons
    elif "person_id" in columns:
        raise StudyError(f"table {table!r} has no person_id")
    dated = [
        c
        for c in columns
        if isinstance(df.schema[c].dataType, DateType | TimestampType | TimestampNTZType)
    ]
    if study.shift_dates and dated:
        if "_shift" not in df.columns:
            raise StudyError(f"dates of {table!r} cannot be shifted: it has no person_id")
        df = shift_dates(df, dated, "_shift")
    out = []
    for column in columns:
        family = id_family(table, column)
        if column == "person_id":
            out.append(F.col("study_person_id").alias("person_id"))
        elif column in PSEUDONYM_COLUMNS:
            message = F.concat(F.lit(f"{STUDY_LABEL}{study.name}\x00"), F.col(column))
            out.append(pseudonym(message, key).alias(column))
        elif family is not None:
            out.append(_other_id(F.col(column), family, study.name, key).alias(column))
        else:
            out.append(F.col(column))
    return df.select(*out)


# --- catalog and audit -----------------------------------------------------------------


def write_catalog(folder: Path, tables: list[str]) -> Path:
    """`extract.duckdb` with a view per table (absolute paths, as the warehouse's catalog)."""
    import duckdb

    target = folder / CATALOG
    tmp = folder / f".{CATALOG}.tmp"
    tmp.unlink(missing_ok=True)
    with duckdb.connect(str(tmp)) as con:
        for table in tables:
            glob = str(folder.resolve() / table / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}')")
    os.replace(tmp, target)
    return target


def append_audit(path: Path, entry: Mapping[str, Any]) -> None:
    """Append one line; a lock keeps lines whole when two extracts finish together."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": datetime.now(UTC).isoformat(), **entry}, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(line)
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)


def read_audit(path: Path) -> list[dict[str, Any]]:
    if not Path(path).is_file():
        return []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def check_slot(audit_log: Path, study: str, slot: int) -> None:
    """Refuse a study whose id slot another study already used: their ids could meet."""
    for entry in read_audit(audit_log):
        if (
            entry.get("slot") == slot
            and entry.get("study") != study
            and (entry.get("status") == "written")
        ):
            raise StudyError(
                f"study {study!r} would share person ids with study {entry['study']!r}: "
                "rename the study"
            )


# --- command line ----------------------------------------------------------------------


def add_command(commands: Any) -> None:
    """Add `omopflow extract` to the CLI's subparsers."""
    command = commands.add_parser("extract", help="write one study's extract of a release")
    command.add_argument("--study", required=True, type=Path, help="study file (YAML)")
    command.add_argument("--warehouse", required=True, type=Path, help="warehouse folder")
    command.add_argument("--out", required=True, type=Path, help="new folder for the extract")
    command.add_argument("--release", help="run id of the release (default: current)")
    command.add_argument("--requested-by", help="who asked for it (default: the OS user)")
    command.add_argument("--restricted", type=Path, help="crosswalk/audit folder")
    command.add_argument("--master", help="Spark master (default local[*])")


def run_command(args: Any) -> int:
    """`omopflow extract`: key from $OMOPFLOW_PSEUDONYM_KEY, audit log in restricted/."""
    from omopflow.pseudonym import load_key
    from omopflow.publish import current_release, read_pointer
    from omopflow.spark import get_session

    study = load_study(args.study)
    warehouse = Path(args.warehouse)
    release = warehouse / "releases" / args.release if args.release else current_release(warehouse)
    if release is None or not release.is_dir():
        raise StudyError(f"no such release in {warehouse}: {args.release or 'current'}")
    restricted = Path(args.restricted or warehouse / "restricted")
    crosswalk_root = restricted / "crosswalk"
    pointer = read_pointer(crosswalk_root)
    key = load_key(os.environ)
    result = extract(
        get_session(master=args.master),
        study,
        release,
        args.out,
        key,
        audit_log=restricted / AUDIT_LOG,
        requested_by=args.requested_by,
        crosswalk=crosswalk_root / pointer if pointer else None,
    )
    print(f"extract of release {result.release} for study {result.study}: {result.out_dir}")
    for name, count in result.summary.items():
        print(f"  {name}: {count}")
    print(f"catalog: {result.catalog}")
    return 0
