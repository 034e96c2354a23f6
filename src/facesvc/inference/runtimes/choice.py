"""Which runtime serves a model on this CPU (FACESVC_CPU_RUNTIME), chosen once at start-up.

The manifest lists variants of one model for several runtimes and precisions (TFLite fp32 and
int8, OpenVINO fp32, bf16 and int8). ``auto`` (the default) loads a variant in place of the
configured default only where the manifest says it measured faster at LFW accuracy within 0.1
point on this CPU's family (``prefer_on``: families, set from ``bench/cpu_runtimes.py``'s run
on a CPU of that family), its runtime imports and its file was pulled; anything else keeps the
default, and the start-up log says which and why.

CPU families (``cpu_family``), by the instructions the runtimes' int8 and fp32 kernels pick:
``amx`` (AMX tiles: Sapphire Rapids and later Xeons), ``avx512_vnni`` (AVX-512 with VNNI, no
AMX: Ice Lake and Cascade Lake Xeons, AMD Zen 4/5), ``avx2`` (AVX2 + FMA only: older Xeons,
AMD Zen 1-3), ``baseline`` (anything less). A family no run measured keeps the defaults.

``tflite`` never swaps; ``openvino`` takes the first OpenVINO variant of each model whose file
is there. A model named explicitly (FACESVC_DETECTOR, FACESVC_EMBEDDER) is always loaded as
named.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facesvc.inference.manifest import CpuFamily, Manifest, ModelSpec, Runtime

CpuRuntime = Literal["auto", "tflite", "openvino"]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


# The flags that decide model speed (XNNPACK and oneDNN pick kernels by them): machines here
# differ in them, so every benchmark and evaluation result records them.
_SPEED_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512", "amx", "vnni", "bf16", "fp16")


def speed_flags() -> list[str]:
    """This CPU's SIMD/matrix flags (AVX2, AVX-512, VNNI, BF16, AMX), sorted."""
    return sorted(f for f in cpu_flags() if f.startswith(_SPEED_FLAGS) or "vnni" in f)


@functools.cache
def cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo; None where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


# in order: a CPU belongs to the first family whose flags it has all of
CPU_FAMILIES: dict[CpuFamily, frozenset[str]] = {
    "amx": frozenset({"amx_int8", "amx_tile"}),
    "avx512_vnni": frozenset({"avx512f", "avx512_vnni"}),
    "avx2": frozenset({"avx2", "fma"}),
    "baseline": frozenset(),
}


def cpu_family(flags: frozenset[str] | None = None) -> CpuFamily:
    """This CPU's family (see the module docstring) from its flags."""
    flags = cpu_flags() if flags is None else flags
    return next(name for name, needs in CPU_FAMILIES.items() if needs <= flags)


def runtime_available(runtime: Runtime) -> bool:
    if runtime == "openvino":
        from facesvc.inference.runtimes.openvino import openvino_available

        return openvino_available()
    return True


def _family(spec: ModelSpec) -> tuple[object, ...]:
    """Variants that can replace each other: one embedding space, or one detector network."""
    if spec.task == "embedder":
        return (spec.task, spec.embedding_space, spec.options.get("input_size", 160))
    return (spec.task, spec.architecture, spec.options.get("variant"), spec.sha256)


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str | None  # None: the configured model, unchanged


def choose_variant(
    manifest: Manifest,
    default: str,
    mode: CpuRuntime,
    models_dir: Path,
    flags: frozenset[str] | None = None,
) -> Choice:
    """The model to load in place of ``default`` under ``mode`` (see the module docstring)."""
    base = manifest.models[default]
    if mode == "tflite":
        return Choice(default, None)
    flags = cpu_flags() if flags is None else flags
    cpu = cpu_family(flags)
    family = _family(base)
    skipped: list[str] = []
    for spec in manifest.models.values():
        if spec.name == default or spec.task != base.task or _family(spec) != family:
            continue
        if mode == "auto":
            if cpu not in spec.prefer_on:
                continue
            why = f"this CPU is of the {cpu} family (measured faster there)"
        else:
            if spec.resolved_runtime != "openvino":
                continue
            why = "FACESVC_CPU_RUNTIME=openvino"
        path = spec.path(models_dir)
        if not runtime_available(spec.resolved_runtime):
            skipped.append(f"{spec.name}: {spec.resolved_runtime} is not installed")
            continue
        if path is None or not path.exists():
            skipped.append(f"{spec.name}: {path} not pulled (`facesvc models pull`)")
            continue
        return Choice(spec.name, f"{why}: {spec.name} in place of {default}")
    if skipped:
        return Choice(default, f"kept {default} ({'; '.join(skipped)})")
    return Choice(default, None)
