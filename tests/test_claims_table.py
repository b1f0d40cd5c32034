"""tests/README.md maps each claim of the README to the tests that fail when it breaks; this holds
that table to the code, so a renamed or deleted test cannot leave a claim pointing at nothing."""

import ast
import functools
import re

from helpers import REPO

TABLE = REPO / "tests" / "README.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def claim_rows():
    """(row text, [(file, test or None)]) of every row of the claims table."""
    text = TABLE.read_text()
    rows = text[text.index("## What the README claims") :].splitlines()
    return [
        (row, REFERENCE.findall(row)) for row in rows if row.startswith("| ") and "---" not in row
    ]


@functools.cache
def functions_of(path):
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_test_the_claims_table_names_exists():
    rows = claim_rows()
    named = [(file, test) for _, references in rows for file, test in references if test]
    assert len(named) > 150  # the table is there and read; a broken parse finds nothing
    missing = []
    for file, test in named:
        path = REPO / file
        if not test.startswith("test_"):
            missing.append(f"{file}::{test} (not a test)")
        elif not path.is_file() or test not in functions_of(path):
            missing.append(f"{file}::{test}")
    assert missing == [], "tests/README.md names tests that do not exist"


def test_every_claim_names_a_test_or_says_why_not():
    unexplained = [
        row
        for row, references in claim_rows()[1:]  # the header row names no test
        if not any(test for _, test in references)
        and not re.search(r"in progress|no test yet|not testable|benchmark|not a test|skipped", row)
        and "tests/integration/conftest.py" not in row
    ]
    assert unexplained == []


# ---- the README's table of what goes wrong ----

ERROR_TABLE = "### When something goes wrong"


def error_rows():
    """The cells of every row of the README's table of bad inputs and faults."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(ERROR_TABLE) :]
    section = section[: section.index("\n#", len(ERROR_TABLE))]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == "| what happens | what you see | the test that tries it |"
    return [row.strip("| ").split(" | ") for row in rows[1:]]


def test_every_case_of_the_error_table_names_a_test_that_exists():
    rows = error_rows()
    assert len(rows) >= 25
    wrong = []
    for cells in rows:
        references = REFERENCE.findall(cells[-1]) if len(cells) == 3 else []
        if len(cells) != 3 or not references or not all(test for _, test in references):
            wrong.append(f"{cells[0]} (three cells, the last naming tests)")
        for file, test in references:
            if test and (not (REPO / file).is_file() or test not in functions_of(REPO / file)):
                wrong.append(f"{cells[0]}: {file}::{test} does not exist")
    assert wrong == [], "README.md, When something goes wrong"
