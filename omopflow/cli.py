"""`omopflow run`, `omopflow demo`, `omopflow vocab subset`: the command-line contract.

Exit status 0 on success; non-zero with a one-line reason when a run is refused, fails its
ledger or is blocked by the validation gate (see omopflow.errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from omopflow.config import DEFAULT_SITE, RunConfig
from omopflow.errors import OmopflowError, UsageError

if TYPE_CHECKING:
    from omopflow.pipeline import RunResult

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLE_INPUT = PACKAGE_DIR / "sample" / "fhir"
SAMPLE_VOCAB = PACKAGE_DIR.parent / "vocabularies" / "sample"
DEMO_OUT = Path("out") / "demo"
DEMO_SITE = "demo"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="omopflow", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="stage, map, validate and publish one input folder")
    run.add_argument("--input", required=True, type=Path, help="NDJSON and/or Bundle folder")
    run.add_argument(
        "--vocab",
        required=True,
        type=Path,
        action="append",
        help="Athena vocabulary folder (repeat to merge several)",
    )
    run.add_argument("--out", required=True, type=Path, help="warehouse folder")
    run.add_argument("--site", default=DEFAULT_SITE, help="site id of this input")
    _common(run)

    demo = commands.add_parser("demo", help="run on the shipped sample data")
    demo.add_argument("--out", type=Path, default=DEMO_OUT, help=f"default: {DEMO_OUT}")
    _common(demo)

    from omopflow import extract as extract_cli
    from omopflow import leakscan

    extract_cli.add_command(commands)
    leakscan.add_arguments(
        commands.add_parser("leakscan", help="search a release for the input's identifiers")
    )

    vocab = commands.add_parser("vocab", help="vocabulary tools")
    vocab_commands = vocab.add_subparsers(dest="vocab_command", required=True)
    subset = vocab_commands.add_parser("subset", help="cut an Athena download to an input's codes")
    subset.add_argument("--athena", required=True, type=Path, action="append")
    subset.add_argument("--input", required=True, type=Path, action="append")
    subset.add_argument("--out", required=True, type=Path)
    return top


def _common(command: argparse.ArgumentParser) -> None:
    command.add_argument("--restricted", type=Path, help="crosswalk/quarantine folder")
    command.add_argument("--timezone", default="UTC", help="timezone of all datetimes")
    command.add_argument("--master", help="Spark master (default local[*])")
    command.add_argument(
        "--date-shift-days",
        type=int,
        default=0,
        metavar="N",
        help="shift each person's dates by a secret number of days in [-N, N] (default: off)",
    )
    command.add_argument(
        "--no-leak-scan",
        dest="leak_scan",
        action="store_false",
        help="skip searching the candidate release for the input's identifiers",
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "vocab":
            return _vocab_subset(args)
        if args.command == "leakscan":
            from omopflow import leakscan

            return leakscan.command(args)
        if args.command == "extract":
            from omopflow import extract as extract_cli

            return extract_cli.run_command(args)
        return _run(args)
    except OmopflowError as exc:
        print(f"omopflow: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    from omopflow import pipeline
    from omopflow.pseudonym import DEMO_KEY, load_key
    from omopflow.spark import get_session

    if args.date_shift_days < 0:
        raise UsageError("--date-shift-days must be 0 (off) or a positive number of days")
    demo = args.command == "demo"
    config = RunConfig(
        SAMPLE_INPUT if demo else args.input,
        (SAMPLE_VOCAB,) if demo else tuple(args.vocab),
        args.out,
        DEMO_SITE if demo else args.site,
        args.restricted,
        args.timezone,
        date_shift_days=args.date_shift_days,
        leak_scan=args.leak_scan,
    )
    # Folders first: a typo in a path is the likelier mistake, and needs no secret to report.
    pipeline.check_folders(config)
    key = DEMO_KEY if args.command == "demo" else load_key(os.environ)
    from rich.console import Console

    console = Console(stderr=True)
    with console.status("starting Spark") as status:
        spark = get_session(master=args.master)
        result = pipeline.run(spark, config, key, lambda stage: status.update(stage))
    print_summary(result, config)
    return 0


def print_summary(result: RunResult, config: RunConfig) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    staging = result.ledger["staging"]
    mapping = result.ledger["mapping"]
    console.print(
        f"[bold]omopflow run {result.run_id}[/bold]: {staging['lines_read']} lines read, "
        f"{staging['staged']} items staged, {staging['quarantined']} quarantined; "
        f"{mapping['resources_mapped']} resources mapped, "
        f"{mapping['resources_excluded']} excluded"
    )
    table = Table("table", "rows")
    for name, rows in sorted(result.rows.items()):
        table.add_row(name, str(rows))
    console.print(table)
    console.print(f"release:  {config.out_dir / 'current'}  ->  {result.release}")
    console.print(f"ledger:   {result.ledger_path}")
    validation = result.ledger.get("validation", {})
    console.print(
        f"checks:   {validation.get('checks_run', 0)} run, "
        f"{len(validation.get('warnings', []))} warnings; "
        f"Data Docs: {validation.get('data_docs_index')}"
    )
    if result.release is not None and (result.release / "report.html").is_file():
        console.print(f"report:   {result.release / 'report.html'}")
    console.print(f"catalog:  {result.catalog}")
    console.print(
        f'query:    duckdb {result.catalog} "SELECT gender_concept_id, count(*) '
        'FROM person GROUP BY ALL"'
    )


def _vocab_subset(args: argparse.Namespace) -> int:
    from omopflow.spark import get_session
    from vocabularies.subset import build_subset

    spark = get_session()
    out = build_subset(spark, args.athena, args.input, args.out)
    print(f"vocabulary subset written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
