"""Run configuration: one frozen object built by the CLI (or a DAG) and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

DEFAULT_SITE = "default"


@dataclass(frozen=True)
class RunConfig:
    input_dir: Path
    vocab_dirs: tuple[Path, ...]
    out_dir: Path
    site: str = DEFAULT_SITE
    restricted_dir: Path | None = None
    timezone: str = "UTC"
    # Gap (days) up to which two spans of a person's events join into one observation period:
    # 548 so that yearly check-ups (366-371 days apart in Synthea) keep one period.
    observation_period_gap_days: int = 548
    source: dict[str, str] = field(default_factory=dict)
    # Records that start after this day are excluded ("in the future"): a clock error at
    # one hospital must not block the release of every site. Default: the run's day.
    as_of: date = field(default_factory=date.today)
    # Per-person date shift of at most this many days (0: off); see omopflow/dateshift.py.
    date_shift_days: int = 0
    # Scan every candidate release for the input's identifiers before publishing.
    leak_scan: bool = True
    # Write the run report and data dictionary into every release.
    report: bool = True

    @property
    def restricted(self) -> Path:
        """Crosswalk, quarantine and keys: never inside the published warehouse."""
        return self.restricted_dir or self.out_dir / "restricted"

    @property
    def vocab_cache(self) -> Path:
        """Loaded releases, keyed by fingerprint: shareable between warehouses."""
        shared = os.environ.get("OMOPFLOW_VOCAB_CACHE")
        return Path(shared) if shared else self.out_dir / "vocabulary"

    @property
    def staging_root(self) -> Path:
        return self.out_dir / "staging"
