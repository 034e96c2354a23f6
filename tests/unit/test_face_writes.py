"""Storing, removing and re-embedding a face go through the gallery (gallery/backend.py's
Gallery protocol), which writes the row and its gallery change together: no use case writes one
without the other (the faces table's add/delete/replace_embedding, a backend's hooks, or
faces.vector)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "facesvc"
# what only the gallery may call: the row writes, the backends' hooks and faces.vector's writes
OWNED = {"face_added", "face_removed", "add", "delete", "replace_embedding", "put", "clear"}
RECEIVERS = {"faces", "FaceRepository", "FaceVectors", "StaleFaces"}


def receiver_name(node: ast.expr) -> str | None:
    """``faces(session)`` / ``FaceVectors(session)`` / ``self.faces`` -> its name."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def offending_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method, receiver = node.func.attr, receiver_name(node.func.value)
        hook = method in {"face_added", "face_removed"}
        row = method in OWNED and receiver in RECEIVERS
        if hook or row:
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {receiver}.{method}")
    return found


def test_use_cases_write_faces_only_through_the_gallery() -> None:
    places = [p for folder in ("services", "workers") for p in (PACKAGE / folder).rglob("*.py")]
    assert [call for path in places for call in offending_calls(path)] == []
