"""The test folder's layout: shared helpers live in conftest.py (fixtures) and support.py (plain
names), so no test module imports another."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another():
    imports = re.compile(r"^\s*(?:from\s+test_\w*\s+import|import\s+test_\w*)", re.M)
    offenders = [f"{path.name}: {match.group(0).strip()}" for path in sorted(TESTS.glob("test_*.py"))
                 for match in imports.finditer(path.read_text())]
    assert not offenders, "import shared helpers from support.py or take conftest.py's fixtures:\n" + "\n".join(offenders)
