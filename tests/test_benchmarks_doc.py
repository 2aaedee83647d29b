"""BENCHMARKS.md's "At a glance" table, checked against the sections it summarises: a reader
who follows a row's link must find its numbers there, so a measurement rerun in a section
cannot leave a stale or mistyped number at the top of the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
NUMBER = r"−?\d[\d,]*(?:\.\d+)?"
WITH_INTERVAL = re.compile(rf"{NUMBER} \[{NUMBER}, {NUMBER}\]")


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    to hyphens (letters of any script and hyphens kept)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def glance_rows_and_body(text: str) -> tuple[list[list[str]], str]:
    """The table's rows as cells (header and rule left out) and the file after the table's
    section, with bold markers removed (a section may bold a number the table quotes)."""
    start = text.index("## At a glance")
    end = text.index("\n## ", start + 1)
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text[start:end].splitlines()
        if line.startswith("| ") and not line.startswith("| area")
    ]
    return rows, text[end:].replace("**", "")


def test_the_checker_finds_a_stale_number_and_a_broken_link():
    text = (
        "## At a glance\n\n| area | what | numbers | verdict | section |\n|---|---|---|---|---|\n"
        "| x | IQL | 20.6 [20.2, 20.9]; CQL 51.5 [21.8, 81.3] | holds | [s](#iql-on-hopper-v0) |\n"
        "\n## IQL on hopper (v0)\n\nIQL **20.6** [20.2, 20.9]; CQL 51.7 [18.4, 85.0].\n"
    )
    rows, body = glance_rows_and_body(text)
    assert [n for n in WITH_INTERVAL.findall(rows[0][2]) if n not in body] == ["51.5 [21.8, 81.3]"]
    assert github_anchor("IQL on hopper (v0)") == "iql-on-hopper-v0"
    assert github_anchor("Value-guided steering (V-GPS): a fixed policy") == (
        "value-guided-steering-v-gps-a-fixed-policy"
    )


TEXT = BENCHMARKS.read_text()
ROWS, BODY = glance_rows_and_body(TEXT)
ANCHORS = {github_anchor(h) for h in re.findall(r"^#+ (.*)$", TEXT, re.M)}


@pytest.mark.parametrize("row", ROWS, ids=[row[1][:40] for row in ROWS])
def test_each_glance_row_links_to_a_section_that_holds_its_numbers(row):
    links = re.findall(r"\]\(#([^)]+)\)", row[-1])
    assert links and set(links) <= ANCHORS, links
    quoted = WITH_INTERVAL.findall(row[2])
    assert [number for number in quoted if number not in BODY] == []
