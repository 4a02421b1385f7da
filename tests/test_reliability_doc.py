"""docs/RELIABILITY.md names the test behind each promise: every ``file::test`` it names must exist.

Parsed, not imported: each named file is read with :mod:`ast` and the test must be a function
defined at its top level or in a class (``file::Class::test`` too); a parametrised id
(``test[sigterm]``) names the function before the bracket.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"
REF = re.compile(r"`(tests/[\w/]+\.py)((?:::\w+)+)(?:\[[^\]`]*\])?`")


def references(text: str) -> list[tuple[str, list[str]]]:
    """``(file, [names...])`` for each ``tests/...py::name[::name]`` in ``text``."""
    return [(m.group(1), m.group(2).split("::")[1:]) for m in REF.finditer(text)]


def defined(path: Path) -> set[str]:
    """``name`` and ``Class::name`` of every function in ``path``."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.add(node.name)
        elif isinstance(node, ast.ClassDef):
            out |= {f"{node.name}::{n.name}" for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return out


def test_every_named_test_exists():
    refs = references(DOC.read_text())
    assert len(refs) >= 20, "docs/RELIABILITY.md lost its promise -> test list"
    missing = []
    for file, names in refs:
        path = ROOT / file
        if not path.is_file():
            missing.append(f"{file} (no such file)")
        elif "::".join(names) not in defined(path):
            missing.append(f"{file}::{'::'.join(names)}")
    assert not missing, "docs/RELIABILITY.md names tests that do not exist: " + ", ".join(sorted(set(missing)))


def test_the_checker_sees_a_missing_test(tmp_path):
    """The check itself can fail: a made-up name is reported, a parametrised id is accepted."""
    text = ("`tests/test_reliability_doc.py::test_every_named_test_exists[any-id]` and "
            "`tests/test_reliability_doc.py::test_no_such_thing`")
    refs = references(text)
    assert refs == [("tests/test_reliability_doc.py", ["test_every_named_test_exists"]),
                    ("tests/test_reliability_doc.py", ["test_no_such_thing"])]
    have = defined(ROOT / "tests" / "test_reliability_doc.py")
    assert "test_every_named_test_exists" in have and "test_no_such_thing" not in have


def test_not_covered_section_is_current():
    text = DOC.read_text()
    assert "## Not covered (and why)" in text
    assert "does not exist on this branch" not in text  # dnx tune exists, and is covered above
