"""Imports go one way: accounts <- rooms <- media <- signaling (STYLE.md).

``accounts`` never imports ``rooms`` or ``signaling``; ``rooms`` never imports
``signaling``. Every .py file under accounts/ and rooms/ (migrations and
management commands included) is parsed with ``ast``, so imports inside
functions count too, and relative imports are resolved to absolute names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "accounts": ("rooms", "signaling", "media"),
    "rooms": ("signaling", "media"),
    "media": ("signaling",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module ``source`` (the module ``module``) imports, wherever the statement is."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)  # importlib.import_module("signaling.x") is an import too
    return names


def violations(source: str, module: str, forbidden: tuple[str, ...], *, is_package: bool = False) -> list[str]:
    return sorted(
        name
        for name in imported_modules(source, module, is_package=is_package)
        if any(name == top or name.startswith(f"{top}.") for top in forbidden)
    )


def _app_files(app: str) -> list[Path]:
    return sorted((ROOT / app).rglob("*.py"))


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_import_direction_app_never_imports_upper_layers(app):
    # Arrange
    files = _app_files(app)

    # Act
    found = {
        str(path.relative_to(ROOT)): bad
        for path in files
        if (
            bad := violations(
                path.read_text(encoding="utf-8"),
                module_name(path),
                FORBIDDEN[app],
                is_package=path.name == "__init__.py",
            )
        )
    }

    # Assert
    assert files, f"no Python files found under {app}/"
    assert found == {}


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        pytest.param("import signaling", "rooms.services", ["signaling"], id="import"),
        pytest.param("import signaling.groups as g", "rooms.services", ["signaling.groups"], id="import-as"),
        pytest.param(
            "from signaling.groups import room_group",
            "rooms.services",
            ["signaling.groups", "signaling.groups.room_group"],
            id="from-import",
        ),
        pytest.param("from signaling import *", "rooms.services", ["signaling"], id="star"),
        pytest.param(
            "def f():\n    from signaling import consumers\n",
            "rooms.services",
            ["signaling", "signaling.consumers"],
            id="inside-a-function",
        ),
        pytest.param(
            "import importlib\nimportlib.import_module('signaling.protocol')",
            "rooms.services",
            ["signaling.protocol"],
            id="import-module-call",
        ),
        pytest.param(
            "from ..signaling import protocol",
            "rooms.services",
            ["signaling", "signaling.protocol"],
            id="relative-parent",
        ),
        pytest.param(
            "from rooms.models import Room\nimport signalingx",
            "rooms.services",
            [],
            id="lower-layer-and-lookalike-allowed",
        ),
        pytest.param("from .models import Room\nfrom . import access", "rooms.services", [], id="same-package"),
    ],
)
def test_import_direction_checker_finds_forbidden_imports(source, module, expected):
    # Act
    found = violations(source, module, ("signaling",))

    # Assert
    assert found == expected


def test_import_direction_checker_accounts_importing_rooms_is_caught():
    # Arrange
    source = "from rooms.models import Program\n"

    # Act
    found = violations(source, "accounts.models", FORBIDDEN["accounts"])

    # Assert
    assert found == ["rooms.models", "rooms.models.Program"]
