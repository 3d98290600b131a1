"""Sites as configuration: one YAML file lists every hospital that contributes data.

A site either answers a FHIR Bulk Data `$export` that the pipeline pulls (`kind: bulk`) or
drops files into a folder (`kind: file_drop`). Validation happens once, at load time, and
every error names the file, the site and the field, because the person reading it is a data
engineer editing YAML, not a Python programmer.

Relative paths (`folder`, `auth.private_key_path`) are resolved against the folder of the
sites file, so the file can move together with what it points at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KIND_BULK = "bulk"
KIND_FILE_DROP = "file_drop"
KINDS = (KIND_BULK, KIND_FILE_DROP)

LEVEL_SYSTEM = "system"
LEVEL_GROUP = "group"
LEVEL_PATIENT = "patient"
LEVELS = (LEVEL_SYSTEM, LEVEL_GROUP, LEVEL_PATIENT)

KICKOFF_METHODS = ("GET", "POST")

# Airflow's schedule presets; `null` (no schedule) means "run by hand only".
SCHEDULE_PRESETS = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")

# SMART v1 spelling; most servers also accept it when they speak SMART v2 (`system/*.rs`).
DEFAULT_SCOPE = "system/*.read"

# The site id becomes a folder name and a partition value: keep it boring.
SITE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")

SITE_KEYS = {
    "id",
    "name",
    "kind",
    "schedule",
    "base_url",
    "level",
    "group_id",
    "types",
    "method",
    "auth",
    "folder",
}
BULK_ONLY_KEYS = {"base_url", "level", "group_id", "types", "method", "auth"}
AUTH_CONNECTION_KEYS = {"connection_id"}
AUTH_INLINE_KEYS = {"token_url", "client_id", "private_key_path", "kid", "scope", "algorithm"}
AUTH_INLINE_REQUIRED = ("token_url", "client_id", "private_key_path", "kid")
ALGORITHMS = ("RS384", "ES384")


class SiteConfigError(ValueError):
    """The sites file is not valid; the message names the site and the field."""


@dataclass(frozen=True)
class SiteAuth:
    """SMART Backend Services credentials: an Airflow connection id, or the inline fields."""

    connection_id: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    private_key_path: Path | None = None
    kid: str | None = None
    scope: str = DEFAULT_SCOPE
    algorithm: str | None = None  # RS384 or ES384; None means "from the key type"


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    kind: str
    schedule: str | None = None
    # kind: bulk
    base_url: str | None = None
    level: str | None = None
    group_id: str | None = None
    types: tuple[str, ...] = ()
    method: str = "GET"
    auth: SiteAuth | None = None
    # kind: file_drop
    folder: Path | None = None


def load_sites(path: str | Path) -> list[Site]:
    """Read and validate a sites YAML file (a top-level `sites:` list)."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SiteConfigError(f"{path}: cannot read the sites file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SiteConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("sites"), list):
        raise SiteConfigError(f"{path}: expected a top-level 'sites:' list")
    sites = [_parse_site(entry, index, path) for index, entry in enumerate(document["sites"])]
    _check_unique_ids(sites, path)
    return sites


def get_site(sites: list[Site], site_id: str) -> Site:
    for site in sites:
        if site.id == site_id:
            return site
    known = ", ".join(site.id for site in sites) or "none"
    raise SiteConfigError(f"unknown site '{site_id}' (known sites: {known})")


class _SiteFields:
    """Reads one site's mapping and raises errors that name the site and the field."""

    def __init__(self, entry: dict[str, Any], label: str, source: Path, prefix: str = "") -> None:
        self.entry = entry
        self.label = label
        self.source = source
        self.prefix = prefix  # "auth." for the nested auth mapping

    def error(self, field: str, problem: str) -> SiteConfigError:
        where = f"{self.source}: {self.label}: field '{self.prefix}{field}'"
        return SiteConfigError(f"{where}: {problem}")

    def required_text(self, field: str) -> str:
        value = self.text(field)
        assert value is not None  # text() raises when a required field is missing
        return value

    def text(self, field: str, required: bool = True) -> str | None:
        value = self.entry.get(field)
        if value is None:
            if required:
                raise self.error(field, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(field, f"must be a non-empty string (got {value!r})")
        return value.strip()

    def choice(self, field: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value = self.text(field, required=default is None) or default
        if value not in allowed:
            raise self.error(field, f"must be one of {', '.join(allowed)} (got {value!r})")
        return value


def _parse_site(entry: Any, index: int, source: Path) -> Site:
    if not isinstance(entry, dict):
        raise SiteConfigError(f"{source}: site #{index + 1}: expected a mapping of fields")
    raw_id = entry.get("id")
    label = f"site '{raw_id}'" if isinstance(raw_id, str) else f"site #{index + 1}"
    fields = _SiteFields(entry, label, source)
    unknown = sorted(set(entry) - SITE_KEYS)
    if unknown:
        raise fields.error(unknown[0], f"unknown field (allowed: {', '.join(sorted(SITE_KEYS))})")
    site_id = fields.required_text("id")
    if not SITE_ID.match(site_id):
        raise fields.error("id", "use lower-case letters, digits, '-' and '_' (max 63 chars)")
    name = fields.required_text("name")
    kind = fields.choice("kind", KINDS)
    schedule = _parse_schedule(fields)
    if kind == KIND_FILE_DROP:
        return _parse_file_drop(fields, site_id, name, schedule)
    return _parse_bulk(fields, site_id, name, schedule)


def _parse_schedule(fields: _SiteFields) -> str | None:
    schedule = fields.text("schedule", required=False)
    if schedule is None or schedule.startswith("@"):
        if schedule is not None and schedule not in SCHEDULE_PRESETS:
            raise fields.error("schedule", f"unknown preset (use one of {SCHEDULE_PRESETS})")
        return schedule
    parts = schedule.split()
    if len(parts) not in (5, 6) or not all(CRON_FIELD.match(part) for part in parts):
        raise fields.error("schedule", f"not a cron expression or preset: {schedule!r}")
    return schedule


def _parse_file_drop(fields: _SiteFields, site_id: str, name: str, schedule: str | None) -> Site:
    misplaced = sorted(BULK_ONLY_KEYS & set(fields.entry))
    if misplaced:
        raise fields.error(misplaced[0], "only allowed for kind 'bulk'")
    folder = fields.required_text("folder")
    return Site(
        id=site_id,
        name=name,
        kind=KIND_FILE_DROP,
        schedule=schedule,
        folder=_resolve(folder, fields.source),
    )


def _parse_bulk(fields: _SiteFields, site_id: str, name: str, schedule: str | None) -> Site:
    if "folder" in fields.entry:
        raise fields.error("folder", "only allowed for kind 'file_drop'")
    base_url = fields.required_text("base_url")
    if not base_url.startswith(("https://", "http://")):
        raise fields.error("base_url", f"must be an http(s) URL (got {base_url!r})")
    level = fields.choice("level", LEVELS, default=LEVEL_SYSTEM)
    group_id = fields.text("group_id", required=level == LEVEL_GROUP)
    if group_id is not None and level != LEVEL_GROUP:
        raise fields.error("group_id", f"only allowed with level 'group' (level is '{level}')")
    return Site(
        id=site_id,
        name=name,
        kind=KIND_BULK,
        schedule=schedule,
        base_url=base_url.rstrip("/"),
        level=level,
        group_id=group_id,
        types=_parse_types(fields),
        method=fields.choice("method", KICKOFF_METHODS, default="GET"),
        auth=_parse_auth(fields),
    )


def _parse_types(fields: _SiteFields) -> tuple[str, ...]:
    value = fields.entry.get("types")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list) or not value:
        raise fields.error("types", "must be a non-empty list of FHIR resource types")
    for item in value:
        if not isinstance(item, str) or not RESOURCE_TYPE.match(item):
            raise fields.error("types", f"not a FHIR resource type name: {item!r}")
    if len(set(value)) != len(value):
        raise fields.error("types", "lists a resource type twice")
    return tuple(value)


def _parse_auth(fields: _SiteFields) -> SiteAuth | None:
    value = fields.entry.get("auth")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fields.error("auth", "must be a mapping (connection_id, or token_url, ...)")
    unknown = sorted(set(value) - AUTH_CONNECTION_KEYS - AUTH_INLINE_KEYS)
    if unknown:
        raise fields.error(f"auth.{unknown[0]}", "unknown field")
    auth = _SiteFields(value, fields.label, fields.source, prefix="auth.")
    if "connection_id" in value:
        inline = sorted(AUTH_INLINE_KEYS & set(value))
        if inline:
            raise auth.error(inline[0], "give either connection_id or the inline fields")
        return SiteAuth(connection_id=auth.required_text("connection_id"))
    for required in AUTH_INLINE_REQUIRED:
        if value.get(required) is None:
            raise auth.error(required, "is required (or give auth.connection_id instead)")
    token_url = auth.required_text("token_url")
    if not token_url.startswith(("https://", "http://")):
        raise auth.error("token_url", f"must be an http(s) URL (got {token_url!r})")
    algorithm = value.get("algorithm")
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise auth.error("algorithm", f"must be one of {', '.join(ALGORITHMS)}")
    return SiteAuth(
        token_url=token_url,
        client_id=auth.required_text("client_id"),
        private_key_path=_resolve(auth.required_text("private_key_path"), fields.source),
        kid=auth.required_text("kid"),
        scope=auth.text("scope", required=False) or DEFAULT_SCOPE,
        algorithm=algorithm,
    )


def _resolve(raw: str, source: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (source.parent / path).resolve()


def _check_unique_ids(sites: list[Site], source: Path) -> None:
    seen: set[str] = set()
    for site in sites:
        if site.id in seen:
            raise SiteConfigError(f"{source}: site '{site.id}': field 'id': used by two sites")
        seen.add(site.id)
