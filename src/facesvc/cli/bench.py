"""``facesvc bench ...``: the benchmark scripts of ``bench/``, run from the source checkout.

The scripts are not part of the installed package: they live beside ``src/`` in the
repository, so these commands work in a checkout (editable install) and say so clearly
elsewhere. A script runs with this interpreter, from the repository root (where their
default ``bench/results/`` paths point), with its output streamed and its exit code passed on.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from facesvc.settings import PROJECT_ROOT

# Scripts in bench/ that are not benchmarks: started by one (http_load.py starts the naive server).
HELPER_SCRIPTS = frozenset({"naive_server"})

bench_app = typer.Typer(
    help="Benchmarks (scripts in bench/ of a source checkout; results in bench/results/).",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: Path
    summary: str


def bench_dir(root: Path | None = None) -> Path | None:
    """``bench/`` of the source checkout this package runs from (or of ``root``), else None:
    an installed wheel has none."""
    root = root or PROJECT_ROOT
    directory = root / "bench"
    if directory.is_dir() and (root / "pyproject.toml").is_file():
        return directory
    return None


def find_benchmarks(directory: Path) -> dict[str, Benchmark]:
    """Every benchmark script in ``directory``, by name, with its docstring's first paragraph."""
    found = {}
    for script in sorted(directory.glob("*.py")):
        if script.stem in HELPER_SCRIPTS or script.stem.startswith("_"):
            continue
        found[script.stem] = Benchmark(script.stem, script, _summary(script))
    return found


def _summary(script: Path) -> str:
    try:
        docstring = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    first_paragraph = docstring.split("\n\n", 1)[0]
    return " ".join(first_paragraph.split()).replace("``", "")


def _benchmarks_or_exit() -> dict[str, Benchmark]:
    directory = bench_dir()
    if directory is None:
        typer.secho(
            f"error: no bench/ directory beside the package (looked in {PROJECT_ROOT}): the "
            "benchmarks ship with the source repository, not the installed package; run them "
            "from a checkout installed with `pip install -e .`",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(2)
    return find_benchmarks(directory)


def _listing(benchmarks: dict[str, Benchmark]) -> str:
    width = max((len(name) for name in benchmarks), default=0)
    return "\n".join(f"{b.name:{width}}  {b.summary}" for b in benchmarks.values())


@bench_app.command("list")
def bench_list() -> None:
    """List the benchmarks with what each measures."""
    typer.echo(_listing(_benchmarks_or_exit()))


@bench_app.command(
    "run",
    # Options the command does not know go to the script; `--` passes anything (--help too).
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bench_run(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Benchmark name (see `facesvc bench list`)")
    ],
    script_args: Annotated[
        list[str] | None,
        typer.Argument(metavar="[-- ARGS]...", help="Arguments for the script", show_default=False),
    ] = None,
) -> None:
    """Run benchmark NAME: `facesvc bench run NAME [-- ARGS]`, e.g. `-- --help`."""
    benchmarks = _benchmarks_or_exit()
    benchmark = benchmarks.get(name.removesuffix(".py"))
    if benchmark is None:
        typer.secho(
            f"error: no benchmark named {name!r}; there are:", err=True, fg=typer.colors.RED
        )
        typer.echo(_listing(benchmarks), err=True)
        raise typer.Exit(2)
    command = [sys.executable, str(benchmark.script), *(script_args or [])]
    # Inherited stdout and stderr: the script's progress shows as it runs.
    process = subprocess.Popen(command, cwd=benchmark.script.parent.parent)  # noqa: S603
    try:
        code = process.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the script too (same process group): let it write what it has.
        code = process.wait()
    raise typer.Exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as a shell
