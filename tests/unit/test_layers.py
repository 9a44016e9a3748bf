"""The daemon's package never imports what only tests, benchmarks and the demo run."""

from __future__ import annotations

import ast
from pathlib import Path

import cand

FORBIDDEN = ("cand_testbed", "tests", "bench")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_cand_does_not_import_the_testbed() -> None:
    root = Path(cand.__file__).parent
    bad = {
        f"{p.relative_to(root)}: {m}"
        for p in root.rglob("*.py")
        for m in imported(p)
        if m.split(".")[0] in FORBIDDEN
    }
    assert not bad, sorted(bad)
    assert len(list(root.rglob("*.py"))) > 20  # the walk found the package
