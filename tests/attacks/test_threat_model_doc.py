"""docs/security.md names every threat test by name, and names no test that does not exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
SUITES = [ROOT / "tests" / "attacks", ROOT / "tests" / "fuzz"]


def defined_tests() -> set[str]:
    names = set()
    for suite in SUITES:
        for path in suite.glob("test_*.py"):
            tree = ast.parse(path.read_text())
            names |= {
                n.name
                for n in tree.body
                if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
            }
    return names


def test_threat_model_names_every_test_and_only_real_ones() -> None:
    doc = DOC.read_text()
    named = set(re.findall(r"`(test_[a-z0-9_]+)(?!\.py)[`[]", doc))
    defined = defined_tests()
    assert defined - named == set(), "tests missing from docs/security.md"
    assert named - defined == set(), "docs/security.md names tests that do not exist"
