"""Small parsers of the deployment files, for the tests that check them against the code and
each other: the Dockerfile (instructions by stage, shell commands), .dockerignore (Docker's
matching), .env.example's FACESVC_* entries, and nginx's config (directives, blocks, the
location nginx picks for a path)."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field

from tests.support.deploy_files import DOCKERIGNORE


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """``COPY --from=build /a /b`` -> ({"from": "build"}, "/a /b")."""
        flags: dict[str, str] = {}
        rest = self.args
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, each tagged with
    the index of its build stage (-1 before the first FROM)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # Docker drops comment lines, even inside a continued instruction
        if not line:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def shell_commands(script: str) -> list[list[str]]:
    """A shell line split into simple commands at &&, ||, ;, | (quotes respected)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in {"&&", "||", ";", "|", "&"}:
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    assert all(isinstance(v, str) for v in value)
    return value


def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in dockerfile)
    return [i for i in dockerfile if i.stage == last]


def run_commands(dockerfile: list[Instruction], stage: int | None = None) -> list[list[str]]:
    return [
        command
        for i in dockerfile
        if i.keyword == "RUN" and (stage is None or i.stage == stage)
        for command in shell_commands(i.args)
    ]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV":
            for token in shlex.split(i.args):
                name, sep, value = token.partition("=")
                assert sep, f"use ENV NAME=value, not the legacy form: ENV {i.args}"
                env[name] = value
    return env


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(re-include?, regex) per line: Go filepath.Match, plus ``**`` for any folders."""
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex)))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


ENV_LINE = re.compile(r"^(#\s*)?FACESVC_([A-Z0-9_]+)=(.*)$")


@dataclass
class EnvEntry:
    value: str
    commented: bool
    comment: str
    count: int = field(default=1)


def parse_env_example(text: str) -> dict[str, EnvEntry]:
    """FACESVC_* entries (commented out or not): value, the comment line above, how often."""
    entries: dict[str, EnvEntry] = {}
    previous = ""
    for line in text.splitlines():
        match = ENV_LINE.match(line)
        if match:
            name = match[2].lower()
            if name in entries:
                entries[name].count += 1
            else:
                comment = previous.removeprefix("#").strip() if previous.startswith("#") else ""
                entries[name] = EnvEntry(match[3], bool(match[1]), comment)
        previous = line
    return entries


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]


def parse_nginx(text: str) -> Directive:
    """A small nginx config parser: directives, arguments (quotes kept out), blocks."""
    pieces = re.findall(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|#[^\n]*|[{};]|[^\s{};'"#]+""", text)
    root = Directive("main", [], [])
    stack = [root]
    words: list[str] = []
    for piece in pieces:
        if piece.startswith("#"):
            continue
        if piece in {";", "{"}:
            directive = Directive(words[0], words[1:], [] if piece == "{" else None)
            assert stack[-1].block is not None
            stack[-1].block.append(directive)
            if piece == "{":
                stack.append(directive)
            words = []
        elif piece == "}":
            assert not words, f"missing ';' after {words}"
            stack.pop()
        else:
            words.append(piece[1:-1] if piece[0] in "'\"" else piece)
    assert len(stack) == 1, "unbalanced braces"
    assert not words, f"missing ';' after {words}"
    return root


def nginx_size(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    match = re.fullmatch(r"(\d+)([kmg]?)", value.lower())
    assert match, value
    return int(match[1]) * units[match[2]]


def choose_location(server: Directive, path: str) -> Directive:
    """The location nginx picks for a URI: exact, else regexes over the longest prefix
    (unless it is ^~), else the longest prefix."""
    locations = [d for d in server.find("location") if not d.args[0].startswith("@")]
    for loc in locations:
        if loc.args[0] == "=" and loc.args[1] == path:
            return loc
    prefixes = [
        loc
        for loc in locations
        if (len(loc.args) == 1 or loc.args[0] == "^~") and path.startswith(loc.args[-1])
    ]
    longest = max(prefixes, key=lambda loc: len(loc.args[-1]), default=None)
    if longest is None or longest.args[0] != "^~":
        for loc in locations:
            if loc.args[0] in {"~", "~*"}:
                flags = re.IGNORECASE if loc.args[0] == "~*" else 0
                if re.search(loc.args[1], path, flags):
                    return loc
    assert longest is not None, f"no location for {path}"
    return longest
