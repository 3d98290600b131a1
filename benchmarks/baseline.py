"""The fastest bare parse of an NDJSON export that Python can do: the floor for any pipeline.

    python -m benchmarks.baseline DIR [--workers N]

orjson.loads of every line, nothing kept, in a process pool over files and byte ranges of
large files (a gzip file is one task: it cannot be entered in the middle). Prints lines,
bytes, seconds and MB/s as JSON. MB is 10^6 bytes of uncompressed NDJSON.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import orjson

DEFAULT_CHUNK_BYTES = 32 * 2**20
BULK_LOG_PREFIX = "log."  # the SMART bulk exporter's event log, not FHIR data

Task = tuple[str, int, int]  # (path, first byte, byte after the range); (path, 0, -1): whole file
Counts = tuple[int, int, int]  # (parsed lines, uncompressed bytes, lines that are not JSON)


def find_ndjson(root: Path) -> list[Path]:
    """Every *.ndjson and *.ndjson.gz under root, the bulk exporter's log excepted."""
    return sorted(
        path
        for path in root.rglob("*")
        if path.name.endswith((".ndjson", ".ndjson.gz"))
        and not path.name.startswith(BULK_LOG_PREFIX)
        and path.is_file()
    )


def _tasks(paths: list[Path], chunk_bytes: int) -> list[Task]:
    tasks: list[Task] = []
    for path in paths:
        size = path.stat().st_size
        if path.suffix == ".gz" or size <= chunk_bytes:
            tasks.append((str(path), 0, -1))
        else:
            tasks += [
                (str(path), start, start + chunk_bytes) for start in range(0, size, chunk_bytes)
            ]
    return tasks


def _parse_lines(lines: Any, stop: int | None) -> Counts:
    """Parse lines until the one starting at or after byte `stop` (None: to the end)."""
    parsed = size = invalid = 0
    for line in lines:
        if stop is not None and size >= stop:
            break
        size += len(line)
        if not line.strip():
            continue
        try:
            orjson.loads(line)
            parsed += 1
        except orjson.JSONDecodeError:
            invalid += 1
    return parsed, size, invalid


def _parse_task(task: Task) -> Counts:
    """One task's counts. A line belongs to the range its first byte falls in."""
    name, start, stop = task
    if stop < 0:
        with gzip.open(name, "rb") if name.endswith(".gz") else open(name, "rb") as lines:
            return _parse_lines(lines, None)
    with open(name, "rb") as lines:
        skipped = 0
        if start > 0:
            # The line running over `start` belongs to the range before (it began there).
            lines.seek(start - 1)
            skipped = len(lines.readline()) - 1
        if start + skipped >= stop:  # the range lies inside one line, counted before
            return 0, 0, 0
        return _parse_lines(lines, stop - start - skipped)


def bare_parse(
    paths: list[Path], workers: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> dict[str, Any]:
    """Parse every line of `paths` with orjson on `workers` processes; counts and speed."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    started = time.perf_counter()
    tasks = _tasks(paths, chunk_bytes)
    if workers == 1:
        results = [_parse_task(task) for task in tasks]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_parse_task, tasks))
    seconds = time.perf_counter() - started
    size = sum(result[1] for result in results)
    return {
        "files": len(paths),
        "workers": workers,
        "lines": sum(result[0] for result in results),
        "invalid_lines": sum(result[2] for result in results),
        "bytes": size,
        "file_bytes": sum(path.stat().st_size for path in paths),
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 1) if seconds > 0 else None,
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: the counts as JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline", description=__doc__)
    parser.add_argument("folder", type=Path, help="searched recursively for *.ndjson[.gz]")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    paths = find_ndjson(args.folder) if args.folder.is_dir() else []
    if not paths or args.workers < 1:
        reason = "--workers must be at least 1" if paths else f"{args.folder}: no *.ndjson[.gz]"
        print(f"benchmarks.baseline: {reason}", file=sys.stderr)
        return 2
    sys.stdout.write(orjson.dumps(bare_parse(paths, args.workers)).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
