"""Helpers shared by the derived-table tests (a module, so tests can import it by name)."""

from __future__ import annotations

from datetime import date


def d(text: str) -> date:
    return date.fromisoformat(text)
