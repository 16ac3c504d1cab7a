"""The test folder's layout: shared helpers live in conftest.py (fixtures) and support.py (plain
names), so no test module imports another."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another():
    imports = re.compile(r"^\s*(?:from\s+test_\w*\s+import|import\s+test_\w*)", re.M)
    offenders = [f"{path.name}: {match.group(0).strip()}" for path in sorted(TESTS.glob("test_*.py"))
                 for match in imports.finditer(path.read_text())]
    assert not offenders, "import shared helpers from support.py or take conftest.py's fixtures:\n" + "\n".join(offenders)


# The package's layers, bottom up (docs/architecture.md): a module may import its own layer and those below.
LAYERS = [("booksegm.errors", "booksegm.config", "booksegm.distributed"),
          ("booksegm.evaluation", "booksegm.viz", "booksegm.shelves"), ("booksegm.data",), ("booksegm.model",),
          ("booksegm.inference", "booksegm.photos"), ("booksegm.training",)]
# everything else is an entry point, the top layer: booksegm.cli, booksegm.bench, and the
# `python -m booksegm.train` forms (booksegm/train.py, booksegm/data/__main__.py, ...), which run a cli module
PACKAGE = TESTS.parent / "booksegm"


def layer(module: str) -> int:
    if module.endswith(".__main__"):
        return len(LAYERS)
    return next((i for i, names in enumerate(LAYERS) if any(module == n or module.startswith(n + ".") for n in names)),
                len(LAYERS))


def test_no_package_module_imports_a_layer_above_its_own():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{module} imports {name}" for name in names
                          if name.startswith("booksegm") and layer(name) > layer(module)]
    assert not offenders, "\n".join(offenders)
