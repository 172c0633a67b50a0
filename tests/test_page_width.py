"""Which of a table's columns a page of a given width shows (ui.page_width);
the Runs and Compare pages' own tables at 562 px: tests/test_app_pages.py and
tests/test_results_pages.py."""

from __future__ import annotations

from ui import page_width


def test_every_column_while_the_width_is_unknown_or_there_is_room():
    wide, narrow = {"a": 300, "b": 300, "c": 200}, {"a": 200, "b": 250, "c": 100}
    assert page_width.columns_for(None, wide, narrow, ["a", "b", "c"]) == (["a", "b", "c"], wide, [])
    assert page_width.columns_for(818, wide, narrow, ["a", "b", "c"]) == (["a", "b", "c"], wide, [])


def test_a_narrow_page_keeps_the_most_needed_columns_in_the_tables_order():
    wide, narrow = {"a": 300, "b": 300, "c": 200}, {"a": 200, "b": 250, "c": 100}
    # b and a first; c (100) still fits beside them in 562 px, a wider column would not.
    assert page_width.columns_for(562, wide, narrow, ["b", "a", "c"]) == (["a", "b", "c"], narrow, [])
    assert page_width.columns_for(500, wide, narrow, ["b", "c", "a"]) == (["b", "c"], narrow, ["a"])
    assert page_width.left_out_note(["a"]).endswith("to see it.")
    assert "leaves out Training and Started." in page_width.left_out_note(["Training", "Started"])
    assert page_width.left_out_note([]) == ""
