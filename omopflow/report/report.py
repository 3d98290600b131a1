"""The run report: one self-contained HTML page per run (inline CSS and SVG, no script).

Sections: the ledger as a flow, mapping coverage and the top unmapped codes, the validation
gate, characterisation per site (persons by birth decade and gender, records per person,
observation period lengths, the most frequent conditions, drugs and measurements), the
comparison with the previous release, and the data dictionary.

Counts of persons or records derived from the tables go through the small-cell rule
(`cells.py`). The ledger's own counts (lines, resources, rows per table) are shown as they
are: they count input lines and resources, and `ledger.json` is published beside the report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omopflow.report import characterise as ch
from omopflow.report import compare, svg
from omopflow.report.cells import DEFAULT_MIN_CELL, check_threshold, is_small, shown
from omopflow.report.dictionary import (
    DICTIONARY_CSV,
    DICTIONARY_MD,
    ColumnProfile,
    data_dictionary,
    read_data_dictionary,
)
from omopflow.report.html import Num, heading, link, note, page, section, table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

REPORT_FILE = "report.html"
GATE_FILE = "validation.json"
TOP_CONCEPT_TABLES = ("condition_occurrence", "drug_exposure", "measurement")
NO_SUPPRESSION = 1  # ledger counts are shown as they are (see the module docstring)


def write_report(
    spark: SparkSession,
    release_dir: Path,
    ledger: Mapping[str, Any],
    out_dir: Path | None = None,
    previous_release: Path | None = None,
    *,
    gate: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    crosswalk: Path | None = None,
    concept: DataFrame | None = None,
    min_cell: int = DEFAULT_MIN_CELL,
    top: int = 15,
) -> Path:
    """Write `<out_dir>/report.html` (default: inside the release) and return its path.

    `gate` is `GateResult.to_json()`, or a function returning it: it is called only once the
    tables' sections are built, so a run can let the gate finish while they are (see
    `omopflow.pipeline`). Without it, `validation.json` in `out_dir` or the release, or else
    the ledger's `validation` entry is used; the report says when there is none.
    `crosswalk` is the crosswalk folder (restricted) that gives each person's site.
    `concept` is the vocabulary's CONCEPT table, for concept names; without it the release's
    own `concept` table is used if published.
    """
    check_threshold(min_cell)
    release_dir = Path(release_dir)
    target = Path(out_dir or release_dir) / REPORT_FILE
    release = ch.open_release(spark, release_dir, crosswalk, concept)
    try:
        mapping = mapping_section(release, ledger, min_cell, top)
        from_tables = [
            ("persons", "Persons", persons_section(release, min_cell)),
            ("records", "Records per person", records_section(release, min_cell)),
            ("periods", "Observation periods", periods_section(release, min_cell)),
            ("concepts", "Top concepts", concepts_section(release, min_cell, top)),
            (
                "changes",
                "Changes",
                changes_section(spark, release_dir, previous_release, release, min_cell, top),
            ),
            ("dictionary", "Data dictionary", dictionary_section(spark, release_dir)),
        ]
    finally:
        ch.close_release(release)
    given = gate() if callable(gate) else gate
    validation = validation_section(
        _gate(given, [target.parent, release_dir], ledger), target.parent
    )
    sections = [
        ("flow", "Ledger", ledger_section(ledger)),
        ("mapping", "Mapping", mapping),
        ("validation", "Validation", validation),
        *from_tables,
    ]
    subtitle = (
        f"{ledger.get('software', 'omopflow')} · sites: {', '.join(release.sites) or 'none'} · "
        f"counts below {min_cell} are shown as <{min_cell}"
    )
    title = f"omopflow run {ledger.get('run_id', release_dir.name)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page(title, subtitle, sections), encoding="utf-8")
    os.replace(tmp, target)
    return target


# --- ledger ----------------------------------------------------------------------------


def ledger_section(ledger: Mapping[str, Any]) -> str:
    staging = ledger.get("staging") or {}
    mapping = ledger.get("mapping") or {}
    rows = ledger.get("rows") or {}
    if not staging and not mapping:
        return section("flow", "The run's ledger", [note("This run's ledger has no counts.")])
    steps = [
        svg.FlowStep("lines read", staging.get("lines_read", 0)),
        svg.FlowStep(
            "items", staging.get("items", 0), "file problems", staging.get("file_problems")
        ),
        svg.FlowStep("staged", staging.get("staged", 0), "quarantined", staging.get("quarantined")),
        svg.FlowStep("live resources", mapping.get("resources_in", 0)),
        svg.FlowStep(
            "mapped",
            mapping.get("resources_mapped", 0),
            "excluded",
            mapping.get("resources_excluded"),
        ),
        svg.FlowStep("OMOP rows", sum(rows.values())),
    ]
    parts = [
        svg.flow_chart(steps, "Ledger: from input lines to OMOP rows"),
        note(
            "Live resources are the staged resources of every site after updates and deletes "
            "(the latest version of each resource), so they may differ from this run's "
            "staged items."
        ),
        heading("Quarantined lines by reason"),
        _reasons(staging.get("quarantined_by_reason") or {}, "Quarantined by reason"),
        heading("Excluded resources by reason"),
        _reasons(mapping.get("excluded_by_reason") or {}, "Excluded by reason"),
        heading("Resources by FHIR type"),
        table(
            ["resource type", "in", "mapped", "excluded (reason: count)"],
            [
                [
                    rtype,
                    entry.get("in", 0),
                    entry.get("mapped", 0),
                    "; ".join(f"{r}: {n:,}" for r, n in sorted(entry.get("excluded", {}).items())),
                ]
                for rtype, entry in sorted((mapping.get("by_type") or {}).items())
            ],
        ),
        heading("Rows per table"),
        svg.bar_chart(sorted(rows.items()), "Rows per OMOP table", NO_SUPPRESSION),
    ]
    return section("flow", "The run's ledger", parts)


def _reasons(reasons: Mapping[str, int], title: str) -> str:
    if not reasons:
        return note("none")
    ordered = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    return svg.bar_chart(ordered, title, NO_SUPPRESSION)


# --- mapping ---------------------------------------------------------------------------


def mapping_section(release: ch.Release, ledger: Mapping[str, Any], min_cell: int, top: int) -> str:
    parts = []
    by_resource = ledger.get("coverage")
    if by_resource:
        parts += [
            heading("Coverage by FHIR resource type and source vocabulary"),
            table(
                ["resource type", "vocabulary", "records", "mapped", "mapped share"],
                [
                    [
                        r["resource_type"],
                        r["vocabulary_id"],
                        Num(shown(r["records"], min_cell)),
                        Num(shown(r["mapped_records"], min_cell)),
                        _share(r["mapped_records"], r["records"], min_cell),
                    ]
                    for r in by_resource
                ],
            ),
        ]
    coverage = ch.coverage_by_vocabulary(release)
    parts += [
        heading("Coverage by OMOP table and source vocabulary"),
        note(
            "Records whose code reached a standard concept (concept id not 0). The source "
            "vocabulary is that of the record's source concept."
        ),
        table(
            ["table", "source vocabulary", "records", "with a standard concept", "share"],
            [
                [
                    c.table,
                    c.vocabulary_id,
                    Num(shown(c.records, min_cell)),
                    Num(shown(c.mapped, min_cell)),
                    _share(c.mapped, c.records, min_cell),
                ]
                for c in coverage
            ],
        ),
        heading(f"Top {top} unmapped source codes"),
    ]
    unmapped = ch.top_unmapped(release, top)
    parts.append(
        table(
            ["table", "source vocabulary", "source value", "records"],
            [
                [u.table, u.vocabulary_id, u.source_value, Num(shown(u.records, min_cell))]
                for u in unmapped
            ],
        )
        if unmapped
        else note("Every coded record reached a standard concept.")
    )
    return section("mapping", "Mapping coverage", parts)


def _share(part: int, whole: int, min_cell: int) -> Num:
    # A share of a small count gives the count away as well.
    if not whole or is_small(whole, min_cell) or is_small(part, min_cell):
        return Num("")
    return Num(f"{part / whole:.1%}")


# --- validation ------------------------------------------------------------------------


def _gate(
    gate: Mapping[str, Any] | None, folders: Sequence[Path], ledger: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The gate's full result if given or written beside the report; else the ledger's."""
    if gate is not None:
        return gate
    for folder in folders:
        path = folder / GATE_FILE
        if path.is_file():
            loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return loaded
    found: Mapping[str, Any] | None = ledger.get("validation")
    return found


def validation_section(gate: Mapping[str, Any] | None, report_folder: Path) -> str:
    if not gate:
        return section(
            "validation",
            "Validation gate",
            [note("No validation result was recorded for this run: the gate did not run.")],
        )
    passed = bool(gate.get("passed"))
    verdict = (
        '<p class="pass">Passed: no error check failed.</p>'
        if passed
        else '<p class="fail">Blocked: at least one error check failed.</p>'
    )
    parts = [verdict]
    docs = gate.get("data_docs_index")
    if docs:
        parts.append(
            f"<p>Great Expectations {link(_relative(docs, report_folder), 'Data Docs')}</p>"
        )
    checks = sorted(
        gate.get("checks") or [], key=lambda c: (c.get("passed", True), c.get("name", ""))
    )
    failed = [c for c in checks if not c.get("passed", True)]
    parts.append(
        note(
            f"{len(checks):,} checks: {len(failed):,} failed "
            f"({len(gate.get('errors') or [])} errors, {len(gate.get('warnings') or [])} "
            f"warnings); {len(gate.get('skipped') or {}):,} skipped."
        )
    )
    parts.append(
        table(
            ["check", "severity", "failed rows", "total rows", "failed share", "threshold", ""],
            [
                [
                    c.get("name", ""),
                    c.get("severity", ""),
                    c.get("failed_rows", 0),
                    c.get("total_rows", 0),
                    Num(f"{c.get('failed_share', 0):.2%}"),
                    Num(f"{c.get('threshold', 0):.0%}"),
                    "passed" if c.get("passed", True) else "FAILED",
                ]
                for c in (failed or checks[:20])
            ],
        )
    )
    if not failed and len(checks) > 20:
        parts.append(note(f"The first 20 of {len(checks):,} passed checks are shown."))
    return section("validation", "Validation gate", parts)


def _relative(target: str, folder: Path) -> str:
    """A link that survives moving the run folder (build/ -> releases/) when both move."""
    path = Path(target)
    if not path.is_absolute():
        return target
    return Path(os.path.relpath(path, folder.resolve())).as_posix()


# --- characterisation ------------------------------------------------------------------


def persons_section(release: ch.Release, min_cell: int) -> str:
    counts = ch.persons_by_site(release)
    parts = [
        table(
            ["site", "persons"],
            [[site, Num(shown(n, min_cell))] for site, n in sorted(counts.items())],
        )
    ]
    for site, chart in ch.birth_decade_by_gender(release).items():
        parts += [
            heading(f"Persons by decade of birth and gender: {site}"),
            svg.column_chart(
                chart.decades, chart.genders, f"Persons by decade of birth: {site}", min_cell
            ),
        ]
    return section("persons", "Persons", parts)


def records_section(release: ch.Release, min_cell: int) -> str:
    stats = ch.records_per_person(release)
    shown_boxes = [
        svg.Box(s.table, *s.percentiles) for s in stats if not is_small(s.persons, min_cell)
    ]
    sites = release.sites
    parts = [
        svg.box_chart(shown_boxes, "Records per person (p10, p25, median, p75, p90)"),
        note(
            f"Among persons with at least one record; tables with fewer than {min_cell} such "
            "persons have no box. Percentiles are approximate (Spark percentile_approx)."
        ),
        table(
            ["table", "records", "persons with records", "median per person"]
            + [f"persons: {s}" for s in sites],
            [
                [
                    s.table,
                    Num(shown(s.records, min_cell)),
                    Num(shown(s.persons, min_cell)),
                    Num("" if is_small(s.persons, min_cell) else f"{s.percentiles[2]:g}"),
                    *[Num(shown(s.persons_by_site.get(site, 0), min_cell)) for site in sites],
                ]
                for s in stats
            ],
        ),
    ]
    return section("records", "Records per person", parts)


def periods_section(release: ch.Release, min_cell: int) -> str:
    lengths = ch.observation_period_lengths(release)
    if not lengths:
        return section("periods", "Observation periods", [note("No observation_period table.")])
    labels = ch.period_bin_labels()
    everyone = lengths[ch.ALL_SITES]
    parts = [
        svg.bar_chart(
            [(f"{label} years", everyone[label]) for label in labels],
            "Observation period length (years), all sites",
            min_cell,
        ),
        table(
            ["site", *[f"{label} y" for label in labels]],
            [
                [site, *[Num(shown(bins[label], min_cell)) for label in labels]]
                for site, bins in lengths.items()
            ],
        ),
    ]
    return section("periods", "Observation period lengths", parts)


def concepts_section(release: ch.Release, min_cell: int, top: int) -> str:
    parts = []
    for name in TOP_CONCEPT_TABLES:
        concepts = ch.top_concepts(release, name, top)
        parts.append(heading(f"Most frequent concepts in {name}"))
        if not concepts:
            parts.append(note("no records with a standard concept"))
            continue
        parts += [
            svg.bar_chart(
                [(c.name, c.records) for c in concepts], f"Top {name} concepts", min_cell
            ),
            table(
                ["concept id", "concept name", "records", "persons"]
                + [f"records: {s}" for s in release.sites],
                [
                    [
                        str(c.concept_id),
                        c.name,
                        Num(shown(c.records, min_cell)),
                        Num(shown(c.persons, min_cell)),
                        *[Num(shown(c.records_by_site.get(s, 0), min_cell)) for s in release.sites],
                    ]
                    for c in concepts
                ],
            ),
        ]
    return section("concepts", "Most frequent concepts", parts)


# --- comparison ------------------------------------------------------------------------


def changes_section(
    spark: SparkSession,
    release_dir: Path,
    previous: Path | None,
    release: ch.Release,
    min_cell: int,
    top: int,
) -> str:
    if previous is None or not Path(previous).is_dir():
        return section(
            "changes", "Changes since the previous release", [note("No previous release.")]
        )
    changes = compare.table_changes(spark, release_dir, Path(previous))
    moves = compare.concept_moves(spark, release_dir, Path(previous), top)
    names = ch.concept_names(release, [m.concept_id for m in moves])
    parts = [
        note(f"Previous release: {Path(previous).name}. Rows are matched on the table's key."),
        table(
            ["table", "previous rows", "current rows", "added", "removed"],
            [
                [
                    c.table,
                    Num(shown(c.previous_rows, min_cell)),
                    Num(shown(c.current_rows, min_cell)),
                    Num(shown(c.added, min_cell)),
                    Num(shown(c.removed, min_cell)),
                ]
                for c in changes
            ],
        ),
        heading(f"Concepts whose record counts moved most (top {top})"),
        table(
            ["table", "concept id", "concept name", "previous", "current", "change"],
            [
                [
                    m.table,
                    str(m.concept_id),
                    names[m.concept_id],
                    Num(shown(m.previous_records, min_cell)),
                    Num(shown(m.current_records, min_cell)),
                    Num(_signed(m.delta, min_cell)),
                ]
                for m in moves
            ],
        )
        if moves
        else note("No concept's record count changed."),
    ]
    return section("changes", "Changes since the previous release", parts)


def _signed(delta: int, min_cell: int) -> str:
    sign = "+" if delta > 0 else "-"
    return f"{sign}{shown(abs(delta), min_cell)}"


# --- data dictionary -------------------------------------------------------------------


def dictionary_section(spark: SparkSession, release_dir: Path) -> str:
    written = release_dir / DICTIONARY_CSV
    profiles = (
        read_data_dictionary(written) if written.is_file() else data_dictionary(spark, release_dir)
    )
    parts = [
        note(
            f"Also in the release as {DICTIONARY_CSV} and {DICTIONARY_MD}. Vocabulary tables "
            "are listed without profiling."
        )
    ]
    for name, columns in _by_table(profiles):
        parts.append(
            f"<details><summary>{escape(name)} ({columns[0].rows:,} rows)</summary>"
            + table(
                [
                    "column",
                    "CDM type",
                    "Parquet type",
                    "required",
                    "null share",
                    "distinct",
                    "description",
                ],
                [
                    [
                        p.column,
                        p.cdm_datatype,
                        p.parquet_type,
                        "yes" if p.required else "",
                        Num("" if p.null_share is None else f"{p.null_share:.1%}"),
                        Num("" if p.distinct is None else f"{p.distinct:,}"),
                        p.description,
                    ]
                    for p in columns
                ],
            )
            + "</details>"
        )
    return section("dictionary", "Data dictionary", parts)


def _by_table(profiles: Sequence[ColumnProfile]) -> list[tuple[str, list[ColumnProfile]]]:
    grouped: dict[str, list[ColumnProfile]] = {}
    for profile in profiles:
        grouped.setdefault(profile.table, []).append(profile)
    return list(grouped.items())
