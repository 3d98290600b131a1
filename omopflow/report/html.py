"""Small HTML building blocks: the page shell with its inline CSS, tables and sections.

Table cells and headings are escaped here, once: callers pass plain text. Section bodies
are markup this package generated (SVG charts, tables), passed through as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #1f3b5a; color: #fff; padding: 16px 24px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
nav { padding: 8px 24px; background: #e8edf3; font-size: 14px; }
nav a { margin-right: 14px; color: #1f3b5a; }
main { padding: 8px 24px 40px 24px; max-width: 1100px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 16px 16px;
  margin: 16px 0; }
h2 { font-size: 18px; border-bottom: 1px solid #eee; padding-bottom: 4px; }
h3 { font-size: 15px; margin-bottom: 4px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f3f7; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 13px; }
.pass { color: #1a7f37; font-weight: bold; }
.fail { color: #b42318; font-weight: bold; }
details { margin: 4px 0; }
summary { cursor: pointer; }
"""


Cell = str | int | float | None


@dataclass(frozen=True)
class Num:
    """A right-aligned number cell, shown as the given text (e.g. a suppressed count)."""

    text: str


def cell(value: Cell | Num) -> str:
    if isinstance(value, Num):
        return f'<td class="n">{escape(value.text)}</td>'
    if isinstance(value, bool) or value is None:
        return f"<td>{'' if value is None else escape(str(value))}</td>"
    if isinstance(value, int | float):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{escape(value)}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell | Num]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, parts: Sequence[str]) -> str:
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def heading(text: str) -> str:
    return f"<h3>{escape(text)}</h3>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document; `sections` are (anchor, nav label, section html)."""
    nav = "".join(link(f"#{anchor}", label) for anchor, label, _ in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # no favicon request: the page must open without any fetch
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><div>{escape(subtitle)}</div></header>"
        f"<nav>{nav}</nav><main>{''.join(html for _, _, html in sections)}</main>"
        "</body></html>\n"
    )
