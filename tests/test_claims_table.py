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
