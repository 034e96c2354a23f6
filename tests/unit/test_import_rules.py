"""README's Architecture section says what each folder of src/facesvc may import of facesvc.
Every import is read here (with ast: those inside functions and under TYPE_CHECKING too) and
every folder is held to it, the API too (never repositories). cli/, container.py and app.py
compose the others and are not checked here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "facesvc"

# What each may import besides itself, as README states it: a folder or module of facesvc,
# or one module of it ("security.crypto").
SERVICES = {
    "repositories",
    "inference",
    "gallery",
    "security",
    "db",
    "errors",
    "settings",
    "observability.request_id",  # the current request's id, for audit rows and jobs
}
RULES: dict[str, set[str]] = {
    "settings": set(),
    "errors": set(),
    "db": {"settings"},
    "inference": {"errors", "settings"},
    "security": set(),
    "repositories": {"db", "security.crypto", "errors"},
    "gallery": {"repositories", "db", "security", "errors"},
    "observability": {"inference"},
    "services": SERVICES,
    "workers": {"services", *SERVICES},
    "evaluation": {"inference", "services", "settings"},
    "api": {
        "services",
        "container",
        "db.models",
        "db.engine",  # deps: the request's transaction; health: the readiness ping
        "inference",
        "security",
        "observability",
        "errors",
        "settings",
    },
}


def imported(path: Path) -> list[tuple[str, ...]]:
    """Each facesvc name ``path`` imports, as the modules that may stand for it, without the
    ``facesvc.`` prefix: ``import a`` is ("a",); ``from a import b`` is ("a", "a.b"), b being
    a module of a or a name in it."""
    found: list[tuple[str, ...]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, f"{node.module}.{alias.name}") for alias in node.names]
    return [
        tuple(name.removeprefix("facesvc.") for name in names)
        for names in found
        if names[0].startswith("facesvc.")
    ]


def allowed(unit: str, name: str) -> bool:
    return name.split(".")[0] == unit or any(
        name == rule or name.startswith(f"{rule}.") for rule in RULES[unit]
    )


def unit_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("unit", sorted(RULES))
def test_each_layer_imports_only_what_readme_allows(unit: str) -> None:
    files = [p for p in PACKAGE.rglob("*.py") if unit_of(p) == unit]
    assert files, unit
    broken = [
        f"{path.relative_to(PACKAGE)} imports facesvc.{names[-1]}"
        for path in sorted(files)
        for names in imported(path)
        if not any(allowed(unit, name) for name in names)
    ]
    assert broken == []


def test_every_folder_and_root_module_is_ruled_or_composes() -> None:
    composing = {"cli", "container", "app", "__init__", "__main__", "static"}
    units = {unit_of(path) for path in PACKAGE.rglob("*.py")}
    assert units - composing - set(RULES) == set()
