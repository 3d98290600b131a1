"""Small-cell rule and charts: a suppressed count never shows its value or true length."""

from __future__ import annotations

import re

import pytest

from omopflow.report import svg
from omopflow.report.cells import check_threshold, shown


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0"), (1, "<5"), (4, "<5"), (5, "5"), (12345, "12,345")]
)
def test_counts_below_the_threshold_are_masked(count, text):
    assert shown(count, 5) == text


def test_threshold_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        check_threshold(0)


def test_small_bar_is_drawn_at_threshold_length_not_its_own():
    one = svg.bar_chart([("rare", 1), ("common", 100)], "t", min_cell=5)
    two = svg.bar_chart([("rare", 2), ("common", 100)], "t", min_cell=5)
    assert one == two  # 1 and 2 are indistinguishable in the picture
    assert "&lt;5" in one and "stroke-dasharray" in one


def test_chart_labels_are_escaped():
    chart = svg.bar_chart([("<script>alert(1)</script>", 10)], "t", min_cell=5)
    assert "<script>" not in chart
    assert re.search(r"&lt;script&gt;", chart)
