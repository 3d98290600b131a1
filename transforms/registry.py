"""The table modules in the order they run: persons and visits first, because every other
table looks their ids up."""

from __future__ import annotations

from types import ModuleType

from transforms import person, visit_occurrence

TABLE_MODULES: tuple[ModuleType, ...] = (person, visit_occurrence)

# Staged resource types no table module reads yet: counted as excluded with this reason.
NOT_MAPPED_REASON = "resource type not mapped to OMOP"
