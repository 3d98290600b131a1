"""The IG version recorded in METADATA matches the IG source the mappings were written from."""

from transforms.derived.build import IG_VERSION
from transforms.derived.metadata import read_ig_version


def test_recorded_ig_version_matches_the_ig_source(shared_data):
    sushi = shared_data / "spec" / "hl7-fhir-omop-ig" / "sushi-config.yaml"
    assert read_ig_version(sushi) == IG_VERSION
