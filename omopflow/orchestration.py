"""What the Airflow DAGs do, as plain functions: testable without Airflow, light to import.

The DAG files in `dags/` are wiring only; every decision lives here:

- `land_site`: pull a bulk site's `$export`, or pick up a file-drop site's new complete
  drops, into `landing/<site>/<export id>/` (always with a `_COMPLETE` marker).
- `harmonise_site`: run the pipeline on each landed export not yet harmonised, oldest first,
  and remember it in `<warehouse>/staging/<site>/_harmonised.json`, so a replay changes
  nothing.
- `refresh_vocabulary`: re-map all staged data with a new Athena release and report which
  records' standard concepts changed.

Importing this module must not import pyspark, httpx or Airflow: DAG files import it at
parse time. Heavy imports happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omopflow.config import RunConfig
from omopflow.errors import UsageError
from omopflow.sites import KIND_BULK, Site

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from omopflow.pipeline import RunResult

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent
SAMPLE_VOCAB = REPO_DIR / "vocabularies" / "sample"

# Settings: an Airflow Variable of the lower-case name wins over the environment variable.
ENV_SITES = "OMOPFLOW_SITES"  # read at DAG parse time: environment only
ENV_HOME = "OMOPFLOW_HOME"
ENV_LANDING = "OMOPFLOW_LANDING"
ENV_WAREHOUSE = "OMOPFLOW_WAREHOUSE"
ENV_VOCAB = "OMOPFLOW_VOCAB"  # one folder, or several separated by os.pathsep
ENV_RESTRICTED = "OMOPFLOW_RESTRICTED"
ENV_KEY = "OMOPFLOW_PSEUDONYM_KEY"
ENV_DATE_SHIFT = "OMOPFLOW_DATE_SHIFT_DAYS"  # 0 or unset: no date shifting
KEY_CONNECTION = "omopflow_pseudonym"  # its password field holds the key
DEFAULT_SITES_FILE = REPO_DIR / "sites.yaml"
DEFAULT_HOME = Path("~/omopflow")
# One run per warehouse: the pipeline's lock refuses a second, so the DAGs queue on this pool.
WAREHOUSE_POOL = "omopflow_warehouse"

COMPLETE_MARKER = "_COMPLETE"  # same marker as omopflow.bulk.landing writes
HARMONISED_STATE = "_harmonised.json"
DROPS_STATE = "_drops.json"
VOCABULARY_STATE = "_vocabulary.json"
PARTIAL_PREFIX = ".partial-"
ERROR_FOLDER = "error"  # a bulk export's OperationOutcome files (omopflow.bulk.landing)
# A drop without a completion marker counts as complete once nothing in it changed for this
# long: a hospital's copy job may still be writing.
DEFAULT_SETTLE_S = 600.0
# Files whose presence says the sender finished writing the drop.
DROP_DONE_MARKERS = (COMPLETE_MARKER, "manifest.json")
CHANGE_EXAMPLES = 20  # most frequent (old, new) concept pairs listed per column

Lookup = Callable[[str], str | None]
PipelineRun = Callable[..., "RunResult"]


@dataclass(frozen=True)
class Settings:
    """Where things live; from Airflow Variables or the environment, with defaults."""

    landing: Path
    warehouse: Path
    vocab_dirs: tuple[Path, ...]
    restricted: Path | None = None
    date_shift_days: int = 0

    def site_landing(self, site_id: str) -> Path:
        return self.landing / site_id

    def run_config(self, input_dir: Path, site_id: str, vocab: tuple[Path, ...]) -> RunConfig:
        return RunConfig(
            input_dir,
            vocab,
            self.warehouse,
            site_id,
            self.restricted,
            date_shift_days=self.date_shift_days,
        )


def sites_file(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ENV_SITES) or DEFAULT_SITES_FILE)


def landing_asset_uri(site_id: str) -> str:
    """The Asset a site's export DAG updates when new data landed; harmonise listens to it."""
    return f"omopflow://landing/{site_id}"


def settings_from(lookup: Lookup) -> Settings:
    """Build Settings from a lookup (Variable, then environment); defaults under ~/omopflow."""
    home = Path(lookup(ENV_HOME) or DEFAULT_HOME).expanduser()
    vocab = lookup(ENV_VOCAB)
    restricted = lookup(ENV_RESTRICTED)
    return Settings(
        landing=Path(lookup(ENV_LANDING) or home / "landing").expanduser(),
        warehouse=Path(lookup(ENV_WAREHOUSE) or home / "warehouse").expanduser(),
        vocab_dirs=_paths(vocab) if vocab else (SAMPLE_VOCAB,),
        restricted=Path(restricted).expanduser() if restricted else None,
        date_shift_days=int(lookup(ENV_DATE_SHIFT) or 0),
    )


def _paths(value: str) -> tuple[Path, ...]:
    return tuple(Path(part).expanduser() for part in value.split(os.pathsep) if part.strip())


def pseudonym_key(
    environ: Mapping[str, str], connection_password: Callable[[], str | None]
) -> bytes:
    """The key from $OMOPFLOW_PSEUDONYM_KEY, else from the `omopflow_pseudonym` connection.

    Decoding is left to omopflow.pseudonym.load_key, so the DAGs and the CLI derive the same
    bytes from the same secret (and therefore the same pseudonyms).
    """
    from omopflow.pseudonym import load_key

    secret = environ.get(ENV_KEY) or connection_password()
    if not secret:
        raise UsageError(
            f"no pseudonymisation key: set {ENV_KEY} or the password of the Airflow "
            f"connection '{KEY_CONNECTION}'"
        )
    return load_key({ENV_KEY: secret})


# -- inside an Airflow task ----------------------------------------------------------------


def airflow_settings() -> Settings:
    """Settings from Airflow Variables (`omopflow_landing`, ...), else the environment."""
    from airflow.sdk import Variable

    def lookup(name: str) -> str | None:
        value = Variable.get(name.lower(), default=None)
        return str(value) if value else os.environ.get(name)

    return settings_from(lookup)


def airflow_pseudonym_key() -> bytes:
    return pseudonym_key(os.environ, _connection_password)


def _connection_password() -> str | None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        password: str | None = BaseHook.get_connection(KEY_CONNECTION).password
    except AirflowNotFoundException:
        return None
    return password


def harmonise_site_task(site_id: str) -> list[dict[str, Any]]:
    """The harmonise DAG's per-site task: starts Spark only when something is pending."""
    settings = airflow_settings()
    if not pending_exports(settings, site_id):
        log.info("site %s: no new exports to harmonise", site_id)
        return []
    return harmonise_site(spark_session(), settings, site_id, airflow_pseudonym_key())


def load_site(site_id: str) -> Site:
    """Read the site afresh when the task runs: sites.yaml may have changed since parsing."""
    from omopflow.sites import get_site, load_sites

    return get_site(load_sites(sites_file()), site_id)


def spark_session() -> SparkSession:
    from omopflow.spark import get_session

    return get_session()


# -- landing ------------------------------------------------------------------------------


def land_site(
    site: Site,
    landing_root: Path,
    connection_getter: Callable[[str], Any] | None = None,
    clock: Callable[[], float] = time.time,
    settle_s: float = DEFAULT_SETTLE_S,
    client_options: dict[str, Any] | None = None,
) -> list[str]:
    """Land whatever is new for one site; return the ids of new exports that carry data.

    An export with no output and no deleted lines (a `_since` export of a quiet day) lands,
    so the next `_since` moves on, but is not reported: there is nothing to harmonise.
    """
    from omopflow.bulk import completed_exports, remove_stale_partials

    site_dir = landing_root / site.id
    remove_stale_partials(site_dir)  # left by a landing that was killed a day ago or more
    before = {path.name for path in completed_exports(site_dir)}
    if site.kind == KIND_BULK:
        _land_bulk(site, landing_root, connection_getter, client_options or {})
    else:
        land_drops(site, landing_root, clock(), settle_s)
    new = [path for path in completed_exports(site_dir) if path.name not in before]
    return [path.name for path in new if carries_data(path)]


def _land_bulk(
    site: Site,
    landing_root: Path,
    connection_getter: Callable[[str], Any] | None,
    client_options: dict[str, Any],
) -> None:
    from omopflow.bulk import client_for_site, land_export

    with client_for_site(site, connection_getter, **client_options) as client:
        land_export(client, site, landing_root)


def carries_data(export_dir: Path) -> bool:
    """False for an export whose `_COMPLETE` record counts no data lines at all."""
    files = _read_json(export_dir / COMPLETE_MARKER).get("files") or {}
    lines = [
        entry.get("lines")
        for name, entry in files.items()
        # The server's OperationOutcomes are not data to harmonise.
        if isinstance(entry, dict) and not name.startswith(ERROR_FOLDER + "/")
    ]
    # File drops record no line counts: any file may hold data.
    return any(count is None or count > 0 for count in lines)


def land_drops(site: Site, landing_root: Path, now: float, settle_s: float) -> list[str]:
    """Copy a file-drop site's new complete drops into its landing; return their export ids.

    A drop is a sub-folder of the site's folder. It is complete when it holds `_COMPLETE` or
    a Bulk Data `manifest.json`, or when nothing in it changed for `settle_s` seconds. A drop
    is landed once per content: if its files change later, it lands again as a new export.
    Loose files beside the drops are not data of any drop: they are logged and left alone.
    """
    folder = site.folder
    if folder is None or not folder.is_dir():
        raise UsageError(f"site '{site.id}': drop folder not found: {folder}")
    site_dir = landing_root / site.id
    site_dir.mkdir(parents=True, exist_ok=True)
    state_path = site_dir / DROPS_STATE
    state = _read_json(state_path)
    landed = []
    for drop in sorted(p for p in folder.iterdir() if not p.name.startswith((".", "_"))):
        if not drop.is_dir():
            log.warning("site %s: %s is not inside a drop folder; ignored", site.id, drop)
            continue
        files = _drop_files(drop)
        if not files:
            continue
        if not _drop_complete(drop, files, now, settle_s):
            log.info("site %s: drop %s is still being written; next time", site.id, drop.name)
            continue
        fingerprint = _fingerprint(drop, files)
        if state.get(drop.name, {}).get("fingerprint") == fingerprint:
            continue
        export = _land_drop(drop, files, site_dir)
        state[drop.name] = {"fingerprint": fingerprint, "export": export}
        _write_json(state_path, state)
        landed.append(export)
    return landed


def _drop_files(drop: Path) -> list[Path]:
    return sorted(
        path
        for path in drop.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(drop).parts)
        and path.name != COMPLETE_MARKER
    )


def _drop_complete(drop: Path, files: list[Path], now: float, settle_s: float) -> bool:
    if any((drop / marker).is_file() for marker in DROP_DONE_MARKERS):
        return True
    newest = max(path.stat().st_mtime for path in files)
    return now - newest >= settle_s


def _fingerprint(drop: Path, files: list[Path]) -> str:
    """Names, sizes and modification times: cheap, and changes when any file is rewritten."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(drop)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def drop_export_id(drop: Path, files: list[Path]) -> str:
    """`<newest file time, compact UTC>-<drop name>`: sorts by time like bulk export ids."""
    newest = datetime.fromtimestamp(max(p.stat().st_mtime for p in files), UTC)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in drop.name)
    return f"{newest.strftime('%Y%m%dT%H%M%SZ')}-{name}"


def _land_drop(drop: Path, files: list[Path], site_dir: Path) -> str:
    """Copy into a hidden folder, write `_COMPLETE`, rename into place (all or nothing)."""
    export = drop_export_id(drop, files)
    target = site_dir / export
    if (target / COMPLETE_MARKER).is_file():
        return export
    partial = site_dir / f"{PARTIAL_PREFIX}{export}-{uuid.uuid4().hex[:8]}"
    try:
        record: dict[str, Any] = {"exportId": export, "source": str(drop), "files": {}}
        for path in files:
            relative = path.relative_to(drop)
            copy = partial / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            record["files"][relative.as_posix()] = {
                "sha256": _sha256(copy),
                "bytes": copy.stat().st_size,
            }
        _write_json(partial / COMPLETE_MARKER, record)
        if target.exists():
            shutil.rmtree(target)  # no `_COMPLETE`: a half-made folder nobody can trust
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("landed drop %s as %s (%d files)", drop, target, len(files))
    return export


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- harmonising --------------------------------------------------------------------------


def harmonised_state_path(warehouse: Path, site_id: str) -> Path:
    return warehouse / "staging" / site_id / HARMONISED_STATE


def harmonised_exports(warehouse: Path, site_id: str) -> dict[str, Any]:
    exports: dict[str, Any] = _read_json(harmonised_state_path(warehouse, site_id)).get(
        "exports", {}
    )
    return exports


def pending_exports(settings: Settings, site_id: str) -> list[Path]:
    """Landed, complete exports of a site not harmonised yet, oldest first."""
    from omopflow.bulk import completed_exports

    done = harmonised_exports(settings.warehouse, site_id)
    return [p for p in completed_exports(settings.site_landing(site_id)) if p.name not in done]


def harmonise_site(
    spark: SparkSession,
    settings: Settings,
    site_id: str,
    key: bytes,
    run: PipelineRun | None = None,
) -> list[dict[str, Any]]:
    """Run the pipeline on each pending export of one site, oldest first; return a summary.

    Each export is recorded as harmonised only after its run published, so a failure stops
    this site here and the next DAG run starts again with the same export. A crash between
    the publish and the record re-runs that export once, which changes nothing: staging
    keeps the latest version of each resource and ids come from the crosswalk.
    """
    run = run or _pipeline_run()
    vocab = active_vocabulary(settings)
    done = []
    for export_dir in pending_exports(settings, site_id):
        if not carries_data(export_dir):
            entry: dict[str, Any] = {"export": export_dir.name, "run_id": None, "empty": True}
        else:
            log.info("site %s: harmonising %s", site_id, export_dir)
            config = settings.run_config(export_dir, site_id, vocab)
            result = run(spark, config, key, lambda stage: log.info("%s: %s", site_id, stage))
            entry = {"export": export_dir.name, "run_id": result.run_id, "rows": result.rows}
        _record_harmonised(settings.warehouse, site_id, entry)
        done.append(entry)
    return done


def _pipeline_run() -> PipelineRun:
    from omopflow.pipeline import run

    return run


def _record_harmonised(warehouse: Path, site_id: str, entry: dict[str, Any]) -> None:
    path = harmonised_state_path(warehouse, site_id)
    state = _read_json(path)
    state.setdefault("exports", {})[entry["export"]] = {
        k: v for k, v in entry.items() if k != "export"
    }
    _write_json(path, state)


# -- vocabulary ---------------------------------------------------------------------------


def active_vocabulary(settings: Settings) -> tuple[Path, ...]:
    """The release the vocabulary DAG last loaded, else the configured (default) one."""
    folders = _read_json(settings.warehouse / VOCABULARY_STATE).get("folders")
    return tuple(Path(f) for f in folders) if folders else settings.vocab_dirs


def release_folders(value: str) -> tuple[Path, ...]:
    """The vocabulary DAG's `folder` param: one folder, or several joined by os.pathsep."""
    folders = _paths(value)
    if not folders:
        raise UsageError("give the new vocabulary release's folder as the 'folder' param")
    return folders


def check_vocabulary_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise UsageError(f"vocabulary folder not found: {folder}")
    if not any((folder / name).is_file() for name in ("CONCEPT.csv", "CONCEPT.csv.gz")):
        raise UsageError(f"not an Athena release (no CONCEPT.csv): {folder}")


def remap_input(settings: Settings) -> tuple[str, Path] | None:
    """(site, export folder) to replay for a re-map; None when nothing was harmonised yet.

    Not an empty input folder, which would be the natural choice: staging cannot read back
    the items of an input without files yet (Spark cannot infer an empty Parquet schema).
    """
    for site_id in staged_sites(settings.warehouse):
        applied = [
            export
            for export, entry in harmonised_exports(settings.warehouse, site_id).items()
            if entry.get("run_id") and (settings.site_landing(site_id) / export).is_dir()
        ]
        if applied:
            return site_id, settings.site_landing(site_id) / max(applied)
    return None


def staged_sites(warehouse: Path) -> list[str]:
    """Sites with published staging (a `CURRENT` pointer), sorted."""
    root = warehouse / "staging"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "CURRENT").is_file())


def refresh_vocabulary(
    spark: SparkSession,
    settings: Settings,
    release: tuple[Path, ...],
    key: bytes,
    run: PipelineRun | None = None,
) -> dict[str, Any]:
    """Make `release` the vocabulary in use, re-map everything staged, report the changes.

    One pipeline run re-maps every site: mapping reads all sites' published staging. The
    run replays an export its site already harmonised (`remap_input`), which changes no
    staged resource: replaying an applied export is idempotent by design.
    """
    run = run or _pipeline_run()
    from omopflow import publish

    for folder in release:
        check_vocabulary_folder(folder)
    previous = publish.current_release(settings.warehouse)
    report: dict[str, Any] = {"vocabulary": [str(f) for f in release], "previous": None}
    replay = remap_input(settings)
    if replay is not None:
        site_id, input_dir = replay
        report["replayed"] = {"site": site_id, "export": input_dir.name}
        config = settings.run_config(input_dir, site_id, release)
        result = run(spark, config, key, lambda stage: log.info("re-map: %s", stage))
        report["run_id"] = result.run_id
        report["vocabulary_meta"] = result.ledger.get("vocabulary")
        if previous is not None and result.release is not None:
            report["previous"] = previous.name
            report["tables"] = release_changes(spark, previous, result.release)
        report_path = settings.warehouse / "runs" / f"{result.run_id}.vocabulary-changes.json"
        _write_json(report_path, report)
        report["report"] = str(report_path)
    else:
        log.warning("nothing harmonised with its export still landed: nothing re-mapped")
    _write_json(
        settings.warehouse / VOCABULARY_STATE,
        {"folders": [str(f.resolve()) for f in release], "run_id": report.get("run_id")},
    )
    return report


def standard_concept_columns(table: str) -> list[str]:
    """Concept columns a vocabulary release can change: not source, not type concepts."""
    from omopflow import cdm

    return [
        f.name
        for f in cdm.table_fields(table)
        if f.name.endswith("_concept_id")
        and not f.name.endswith(("_source_concept_id", "_type_concept_id"))
    ]


def release_changes(spark: SparkSession, old: Path, new: Path) -> dict[str, Any]:
    """Per table: rows before/after, rows added/removed, rows whose standard concepts changed.

    Rows are matched on the table's primary key: ids come from the crosswalk, so the same
    source record keeps its id across runs. A record that moved to another table (its new
    standard concept has another domain) shows as removed here and added there.
    """
    from omopflow import cdm

    changes = {}
    for table in sorted(set(cdm.tables())):
        keys = [f.name for f in cdm.table_fields(table) if f.primary_key]
        columns = standard_concept_columns(table)
        if (
            len(keys) != 1
            or not columns
            or not (old / table).is_dir()
            or not (new / table).is_dir()
        ):
            continue
        before = spark.read.parquet(str(old / table)).select(keys[0], *columns)
        after = spark.read.parquet(str(new / table)).select(keys[0], *columns)
        changes[table] = _table_changes(before, after, keys[0], columns)
    return changes


def _table_changes(
    before: DataFrame, after: DataFrame, key: str, columns: list[str]
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    # Marker columns tell "absent on one side" from "present with null concepts".
    old = before.select(
        F.col(key), F.lit(True).alias("_in_old"), *(F.col(c).alias(f"old_{c}") for c in columns)
    )
    new = after.select(
        F.col(key), F.lit(True).alias("_in_new"), *(F.col(c).alias(f"new_{c}") for c in columns)
    )
    both = old.join(new, key, "full_outer")
    in_old = F.col("_in_old").isNotNull()
    in_new = F.col("_in_new").isNotNull()
    differs = {c: ~F.col(f"old_{c}").eqNullSafe(F.col(f"new_{c}")) for c in columns}
    any_differs = F.lit(False)
    for condition in differs.values():
        any_differs = any_differs | condition
    matched = in_old & in_new
    summary = both.agg(
        F.count(F.when(in_old, True)).alias("rows_before"),
        F.count(F.when(in_new, True)).alias("rows_after"),
        F.count(F.when(~in_old, True)).alias("added"),
        F.count(F.when(~in_new, True)).alias("removed"),
        F.count(F.when(matched & any_differs, True)).alias("changed"),
        *(F.count(F.when(matched & d, True)).alias(c) for c, d in differs.items()),
    ).first()
    assert summary is not None  # an aggregate without grouping always has one row
    result: dict[str, Any] = {
        name: int(summary[name])
        for name in ("rows_before", "rows_after", "added", "removed", "changed")
    }
    result["changed_by_column"] = {}
    for column, condition in differs.items():
        if summary[column]:
            pairs = (
                both.where(matched & condition)
                .groupBy(F.col(f"old_{column}").alias("old"), F.col(f"new_{column}").alias("new"))
                .count()
                .orderBy(F.desc("count"), "old", "new")
                .limit(CHANGE_EXAMPLES)
            )
            result["changed_by_column"][column] = {
                "rows": int(summary[column]),
                "top_changes": [row.asDict() for row in pairs.collect()],
            }
    return result


# -- small files --------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(content, dict):
        raise UsageError(f"{path} should hold a JSON object; fix or delete it")
    return content


def _write_json(path: Path, content: dict[str, Any]) -> None:
    """Write beside and rename, so a crash never leaves half a state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    temporary.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
