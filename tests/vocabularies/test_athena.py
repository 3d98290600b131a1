"""Loading Athena folders into the Parquet cache."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from tests.vocabularies.athena_fixtures import concept_row, maps, write_table
from vocabularies import athena
from vocabularies.athena import VocabularyError, load_release
from vocabularies.concepts import EHR


def small_release(folder: Path, gz: bool = False) -> Path:
    write_table(
        folder,
        "concept",
        [
            concept_row(1001, "111", "SNOMED", standard="S", name='Finding "quoted" name'),
            concept_row(1002, "222", "SNOMED"),
        ],
        gz=gz,
    )
    # 1002 -> 7777777: a relationship to a concept the release does not carry
    write_table(folder, "concept_relationship", [maps(1002, 1001), maps(1002, 7777777)])
    write_table(
        folder, "vocabulary", [["None", "OMOP Standardized Vocabularies", "", "v5.0 TEST", 0]]
    )
    return folder


def test_missing_concept_file_is_a_one_line_error(spark, tmp_path):
    write_table(tmp_path / "vocab", "vocabulary", [])
    with pytest.raises(VocabularyError, match=r"has no CONCEPT\.csv") as error:
        load_release(spark, tmp_path / "vocab", tmp_path / "cache")
    assert "\n" not in str(error.value)


def test_missing_folder_is_an_error(spark, tmp_path):
    with pytest.raises(VocabularyError, match="does not exist"):
        load_release(spark, tmp_path / "nowhere", tmp_path / "cache")


def test_gzipped_release_is_typed_and_keeps_dangling_relationships(spark, tmp_path):
    release = load_release(spark, small_release(tmp_path / "v", gz=True), tmp_path / "cache")

    finding = release.table("concept").where("concept_id = 1001").first()
    assert finding is not None
    assert finding["valid_start_date"] == datetime.date(1970, 1, 1)
    assert finding["concept_name"] == 'Finding "quoted" name'  # quotes are data, not quoting
    dangling = release.table("concept_relationship").where("concept_id_2 = 7777777").count()
    assert dangling == 1
    assert release.table("concept_ancestor").count() == 0  # optional file absent: empty
    assert release.version == "v5.0 TEST"
    # the supplement is always merged: type concepts exist even in this tiny release
    assert release.table("concept").where(f"concept_id = {EHR}").count() == 1


def test_unchanged_release_is_reused_and_changed_one_reloaded(spark, tmp_path, monkeypatch):
    folder = small_release(tmp_path / "v")
    first = load_release(spark, folder, tmp_path / "cache")

    def must_not_reload(*args: object) -> None:
        raise AssertionError("an unchanged release was loaded again")

    with monkeypatch.context() as patched:
        patched.setattr(athena, "write_cache", must_not_reload)
        again = load_release(spark, folder, tmp_path / "cache")
    assert again.path == first.path

    write_table(
        folder,
        "concept",
        [concept_row(1001, "111", "SNOMED", standard="S"), concept_row(1003, "333", "SNOMED")],
    )
    changed = load_release(spark, folder, tmp_path / "cache")
    assert changed.fingerprint != first.fingerprint
    assert changed.table("concept").where("concept_id = 1003").count() == 1


def test_later_folders_only_add_rows(spark, tmp_path):
    base = small_release(tmp_path / "base")
    extra = tmp_path / "extra"
    write_table(
        extra,
        "concept",
        [
            concept_row(1001, "111", "SNOMED", name="renamed by the later folder"),
            concept_row(2001, "U18.1", "KCD7"),
        ],
    )
    write_table(extra, "vocabulary", [["KCD7", "KCD", "", "7th revision", 32688]])
    release = load_release(spark, [base, extra], tmp_path / "cache")

    concept = release.table("concept")
    kept = concept.where("concept_id = 1001").first()
    assert kept is not None and kept["concept_name"] == 'Finding "quoted" name'
    assert concept.where("concept_id = 2001").count() == 1
    assert concept.where("concept_id = 1001").count() == 1
    assert release.table("vocabulary").count() == 2
    assert release.version == "v5.0 TEST"


def test_version_without_release_row_is_a_summary(spark, tmp_path):
    folder = tmp_path / "v"
    write_table(folder, "concept", [concept_row(1001, "111", "SNOMED", standard="S")])
    write_table(folder, "vocabulary", [["SNOMED", "SNOMED CT", "", "2023-07-31", 44819097]])
    release = load_release(spark, folder, tmp_path / "cache")
    assert release.version == "no release row; SNOMED 2023-07-31"
