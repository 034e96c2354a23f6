"""Model manifests for tests that register a model of their own beside the default ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facesvc.settings import Settings


def manifest_with(folder: Path, **entries: dict[str, Any]) -> Path:
    """A copy of the committed manifest with ``entries`` (name -> entry) added or replaced,
    written to ``folder/manifest.json``; point ``FACESVC_MODEL_MANIFEST`` at the path."""
    manifest = json.loads(Settings().manifest_path.read_text(encoding="utf-8"))
    manifest["models"].update(entries)
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path
