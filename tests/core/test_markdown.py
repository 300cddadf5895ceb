"""The markdown table helper lays out headers, alignment and rows."""

from featviz import markdown


def test_table_alignment_and_rows():
    text = markdown.table(["layer", "shape", "value"], [("a", "3x4", 1.5), ("b", "5", "x")],
                          left=2)
    assert text.splitlines() == ["| layer | shape | value |", "|---|---|---:|",
                                 "| a | 3x4 | 1.5 |", "| b | 5 | x |"]
