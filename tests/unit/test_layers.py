"""The layers of the code, checked: the foundation imports no part of the product, the parts import
the foundation and what is below them, and only the operations tools (guardian.cli, .stack,
.demo, .simulator) import everything.

import-linter would be the tool for this, but it finds modules by walking the root package's
folder, and the parts live in their own top-level folders mapped into guardian.* (pyproject.toml).
"""

from __future__ import annotations

import ast
from pathlib import Path

from guardian.settings import REPO_ROOT

OPS = {"guardian.cli", "guardian.stack", "guardian.demo", "guardian.simulator"}
PARTS = {"guardian.producers", "guardian.stream_processors", "guardian.sinks", "guardian.schemas", "guardian.api"}
FOUNDATION_FILES = ["guardian/settings.py", "guardian/errors.py", "guardian/logs.py", "guardian/cpus.py",
                    "guardian/kafka_config.py", "guardian/kafka_ranges.py", "guardian/kafka_lookup.py",
                    "guardian/cli_kit.py",
                    "guardian/__init__.py"]  # fmt: skip
# folder -> what it may not import (besides the operations tools, which no part may import)
FORBIDDEN = {
    "schemas": PARTS - {"guardian.schemas"},
    "producers": {"guardian.stream_processors", "guardian.sinks", "guardian.api"},
    "sinks": {"guardian.producers", "guardian.stream_processors", "guardian.api"},
    "stream_processors": {"guardian.producers", "guardian.api"},
    "api": {"guardian.producers", "guardian.stream_processors"},
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def breaks(names: set[str], forbidden: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


def test_the_foundation_imports_no_part_of_the_product():
    for file in FOUNDATION_FILES:
        assert breaks(imported(REPO_ROOT / file), PARTS | OPS) == [], file


def test_each_part_imports_only_what_is_below_it():
    problems = {}
    for folder, forbidden in FORBIDDEN.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if found := breaks(imported(path), forbidden | OPS):
                problems[str(path.relative_to(REPO_ROOT))] = found
    assert problems == {}
