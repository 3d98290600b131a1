"""Sites configuration: the example file loads, and each mistake names its site and field."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from omopflow.sites import SiteConfigError, get_site, load_sites

REPO = Path(__file__).resolve().parents[2]

GOOD_BULK = """
  - id: east
    name: East
    kind: bulk
    base_url: https://fhir.example.org/r4/
    level: group
    group_id: cohort-1
    types: [Patient, Condition]
    schedule: "0 2 * * *"
    auth:
      token_url: https://auth.example.org/token
      client_id: omopflow
      private_key_path: keys/east.pem
      kid: k1
"""


def write_sites(tmp_path: Path, entries: str) -> Path:
    """A sites file whose `sites:` list holds `entries` (YAML list items)."""
    path = tmp_path / "sites.yaml"
    body = textwrap.indent(textwrap.dedent(entries).strip("\n"), "  ")
    path.write_text(f"sites:\n{body}\n")
    return path


def test_the_shipped_example_file_is_valid():
    sites = load_sites(REPO / "sites.yaml")

    demo = get_site(sites, "demo")
    assert demo.kind == "file_drop" and demo.folder is not None
    bulk = [site for site in sites if site.kind == "bulk"]
    assert bulk and bulk[0].auth is not None


def test_a_valid_bulk_site_is_read_with_defaults_and_resolved_paths(tmp_path: Path):
    (site,) = load_sites(write_sites(tmp_path, GOOD_BULK))

    assert site.base_url == "https://fhir.example.org/r4"  # trailing slash dropped
    assert site.types == ("Patient", "Condition")
    assert site.method == "GET"
    assert site.auth is not None
    assert site.auth.scope == "system/*.read"
    assert site.auth.private_key_path == tmp_path / "keys" / "east.pem"


def test_a_file_drop_folder_is_relative_to_the_sites_file(tmp_path: Path):
    (site,) = load_sites(
        write_sites(tmp_path, "- {id: d, name: D, kind: file_drop, folder: drops/d}")
    )

    assert site.folder == tmp_path / "drops" / "d"


def test_a_connection_id_is_enough_for_auth(tmp_path: Path):
    body = GOOD_BULK.split("    auth:")[0] + "    auth: {connection_id: fhir_east}\n"
    (site,) = load_sites(write_sites(tmp_path, body))

    assert site.auth is not None and site.auth.connection_id == "fhir_east"


def test_get_site_names_the_known_sites(tmp_path: Path):
    sites = load_sites(write_sites(tmp_path, GOOD_BULK))

    with pytest.raises(SiteConfigError, match=r"unknown site 'west' \(known sites: east\)"):
        get_site(sites, "west")


def bad(change_from: str, change_to: str) -> str:
    assert change_from in GOOD_BULK
    return GOOD_BULK.replace(change_from, change_to)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            bad("kind: bulk", "kind: ftp"),
            "site 'east': field 'kind': must be one of bulk, file_drop",
        ),
        (bad("id: east", "id: East Hospital"), "field 'id': use lower-case"),
        (bad("    name: East\n", ""), "site 'east': field 'name': is required"),
        (bad("level: group", "level: grp"), "field 'level': must be one of system, group, patient"),
        (bad("    group_id: cohort-1\n", ""), "site 'east': field 'group_id': is required"),
        (bad("level: group", "level: system"), "field 'group_id': only allowed with level 'group'"),
        (bad("base_url: https", "base_url: ftp"), "field 'base_url': must be an http(s) URL"),
        (bad("[Patient, Condition]", "[Patient, patient]"), "field 'types': not a FHIR resource"),
        (bad("[Patient, Condition]", "[Patient, Patient]"), "field 'types': lists a resource"),
        (bad("[Patient, Condition]", "[]"), "field 'types': must be a non-empty list"),
        (bad('"0 2 * * *"', '"every night"'), "field 'schedule': not a cron expression"),
        (bad('"0 2 * * *"', "'@nightly'"), "field 'schedule': unknown preset"),
        (bad("      kid: k1\n", ""), "site 'east': field 'auth.kid': is required"),
        (bad("      kid: k1", "      kid: k1\n      pin: 1234"), "field 'auth.pin': unknown field"),
        (
            bad("      kid: k1", "      kid: k1\n      connection_id: c"),
            "field 'auth.client_id': give either connection_id or the inline fields",
        ),
        (bad("token_url: https", "token_url: ftp"), "field 'auth.token_url': must be an http(s)"),
        (bad("kid: k1", "kid: k1\n      algorithm: HS256"), "field 'auth.algorithm': must be one"),
        (bad("    schedule:", "    folder: x\n    schedule:"), "field 'folder': only allowed for"),
        (bad("    schedule:", "    colour: red\n    schedule:"), "field 'colour': unknown field"),
        (GOOD_BULK + GOOD_BULK, "site 'east': field 'id': used by two sites"),
    ],
)
def test_each_mistake_is_reported_with_site_and_field(tmp_path: Path, body: str, message: str):
    with pytest.raises(SiteConfigError, match=re.escape(message)):
        load_sites(write_sites(tmp_path, body))


def test_bulk_fields_on_a_file_drop_site_are_refused(tmp_path: Path):
    body = "- {id: d, name: D, kind: file_drop, folder: x, base_url: 'https://x'}"

    with pytest.raises(SiteConfigError, match="site 'd': field 'base_url': only allowed for kind"):
        load_sites(write_sites(tmp_path, body))


def test_a_site_that_is_not_a_mapping_is_refused(tmp_path: Path):
    with pytest.raises(SiteConfigError, match="site #1: expected a mapping"):
        load_sites(write_sites(tmp_path, "- just a string"))


def test_a_file_without_a_sites_list_is_refused(tmp_path: Path):
    path = tmp_path / "sites.yaml"
    path.write_text("east: {kind: bulk}\n")

    with pytest.raises(SiteConfigError, match="expected a top-level 'sites:' list"):
        load_sites(path)


def test_broken_yaml_is_refused(tmp_path: Path):
    path = tmp_path / "sites.yaml"
    path.write_text("sites: [\n")

    with pytest.raises(SiteConfigError, match="not valid YAML"):
        load_sites(path)


def test_a_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(SiteConfigError, match="cannot read the sites file"):
        load_sites(tmp_path / "nope.yaml")
