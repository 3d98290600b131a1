"""The ledger's sums: a run whose counts do not add up is named, not published."""

from omopflow.ledger import UNACCOUNTED, check


def _ledger(**overrides):
    ledger = {
        "staging": {"arrived": 11, "staged": 8, "quarantined": 3},
        "mapping": {"resources_in": 8, "resources_mapped": 6, "resources_excluded": 2},
    }
    for section, values in overrides.items():
        ledger[section].update(values)
    return ledger


def test_a_whole_ledger_has_no_problems():
    assert check(_ledger()) == []


def test_lost_staging_items_are_reported():
    assert check(_ledger(staging={"staged": 7})) == [
        "staging: 11 items arrived but 10 were staged or quarantined"
    ]


def test_lost_resources_are_reported():
    assert check(_ledger(mapping={"resources_mapped": 5})) == [
        "mapping: 8 resources in, 7 mapped or excluded"
    ]


def test_unaccounted_resources_are_a_problem_even_when_sums_match():
    problems = check(_ledger(mapping={"excluded_by_reason": {UNACCOUNTED: 2}}))
    assert problems == ["mapping: 2 resources neither mapped nor excluded"]
