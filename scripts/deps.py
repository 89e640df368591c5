"""Print the dependencies declared in pyproject.toml, one per line, for ``pip install -r``.

The project is an application run from its checkout (``packages = []`` in
pyproject.toml), not a library: installing it with ``pip install .`` would
only build an empty wheel and leave ``*.egg-info``/``build/`` in the tree. So
scripts/demo, scripts/test and the Dockerfile install what ``[project]``
declares, read here with the standard library, and nothing else.

Usage: python scripts/deps.py [EXTRA ...]     e.g. python scripts/deps.py test
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    found = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no optional dependency group {extra!r} (has {sorted(optional)})")
        found.extend(optional[extra])
    return found


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
