"""Write tables, switch releases atomically, keep the DuckDB catalog in step.

Layout under `<out>`:
  build/<run>/<table>/     candidate tables of a run (kept when the gate blocks it)
  releases/<run>/          published releases; `current` is a symlink to one of them
  omop.duckdb              one view per table over `current/<table>`
Switching is a rename of a symlink (atomic on POSIX): readers see the old release or the
new one, never a mix. Pointers (`CURRENT` files) for staging and the crosswalk are switched
the same way, before the release, so a crash in between only leaves extra, reusable state.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow import cdm

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

ROWS_PER_FILE = 2_000_000
KEEP_RELEASES = 3
_PART = re.compile(r"^(part-\d+)-.*?(\.[a-z0-9]+)?\.parquet$")


def primary_key(table: str) -> list[str]:
    keys = [f.name for f in cdm.table_fields(table) if f.primary_key]
    return keys or [f.name for f in cdm.table_fields(table)][:2]


def write_table(df: DataFrame, table: str, path: Path) -> int:
    """Write a conformed table sorted by its key into stable file names; return its rows.

    Sorting and renaming the part files make a re-run on the same input byte-identical.
    """
    rows = df.count()
    files = max(1, -(-rows // ROWS_PER_FILE))
    key = primary_key(table)
    ordered = (
        df.repartitionByRange(files, *key).sortWithinPartitions(*key)
        if files > 1
        else (df.coalesce(1).sortWithinPartitions(*key))
    )
    ordered.write.mode("overwrite").parquet(str(path))
    _stable_names(path)
    return rows


def _stable_names(folder: Path) -> None:
    for item in folder.iterdir():
        match = _PART.match(item.name)
        if match:
            item.rename(folder / f"{match.group(1)}.parquet")
        elif item.name.startswith((".", "_")):
            item.unlink()


def link_tables(source: Path, tables: Sequence[str], build: Path) -> list[str]:
    """Put read-only tables (the vocabulary) into a build as hard links, or copies when the
    two folders are on different file systems; return the tables added.

    Releases and the vocabulary cache are never modified in place, so sharing file blocks
    between them is safe, and a release of a full Athena vocabulary costs no extra disk.
    """
    added = []
    for table in tables:
        files = sorted((source / table).glob("*.parquet"))
        if not files:
            continue
        target = build / table
        target.mkdir(parents=True, exist_ok=True)
        for number, file in enumerate(files):
            copy = target / f"part-{number:05d}.parquet"
            try:
                os.link(file, copy)
            except OSError:
                shutil.copy2(file, copy)
        added.append(table)
    return added


def read_pointer(folder: Path) -> str | None:
    pointer = folder / "CURRENT"
    return pointer.read_text().strip() if pointer.is_file() else None


def switch_pointer(folder: Path, target: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "CURRENT.tmp"
    tmp.write_text(target + "\n")
    os.replace(tmp, folder / "CURRENT")


def publish_release(out_dir: Path, run_id: str, build: Path) -> Path:
    """Move the validated build into releases/ and point `current` at it."""
    releases = out_dir / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    release = releases / run_id
    if release.exists():
        shutil.rmtree(release)
    build.rename(release)
    link_tmp = out_dir / "current.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(Path("releases") / run_id)
    os.replace(link_tmp, out_dir / "current")
    _prune(releases, keep=KEEP_RELEASES, protect=run_id)
    return release


def current_release(out_dir: Path) -> Path | None:
    link = out_dir / "current"
    return link.resolve() if link.is_symlink() else None


def _prune(releases: Path, keep: int, protect: str) -> None:
    old = sorted((p for p in releases.iterdir() if p.is_dir()), key=lambda p: p.name)
    for release in old[:-keep]:
        if release.name != protect:
            shutil.rmtree(release)


def write_catalog(out_dir: Path, tables: Sequence[str]) -> Path:
    """`<out>/omop.duckdb`: a view per published table over `current/` (absolute paths)."""
    import duckdb

    target = out_dir / "omop.duckdb"
    tmp = out_dir / "omop.duckdb.tmp"
    tmp.unlink(missing_ok=True)
    current = (out_dir / "current").absolute()
    with duckdb.connect(str(tmp)) as con:
        for table in tables:
            glob = str(current / table / "**" / "*.parquet").replace("'", "''")
            con.execute(
                f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{glob}', "
                "hive_partitioning = true)"
            )
    os.replace(tmp, target)
    return target
