"""Real nginx for the tests and benchmarks: nginx/nginx.conf rendered for a temporary folder and
addresses, and the binary (a skip, or a failure under CI, where it is missing)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.deploy_files import NGINX_CONF

TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def render_nginx_conf(directory: Path, upstream: str, listen: str) -> Path:
    """nginx/nginx.conf with its environment-specific values replaced: the upstream address,
    the listen address and every file path (pid, logs, temp folders, all under directory)."""
    text = NGINX_CONF.read_text(encoding="utf-8")

    def sub(pattern: str, replace: Callable[[re.Match[str]], str], count: int) -> None:
        nonlocal text
        text, done = re.subn(pattern, replace, text, flags=re.MULTILINE)
        assert done == count, f"{pattern!r} matched {done} times, expected {count}"

    sub(r"^(\s*server\s+)api:8000;", lambda m: f"{m[1]}{upstream};", 1)
    sub(r"^(\s*listen\s+)80;", lambda m: f"{m[1]}{listen};", 1)
    sub(r"^(\s*pid\s+)\S+;", lambda m: f"{m[1]}{directory / 'nginx.pid'};", 1)
    sub(r"^(\s*error_log\s+)\S+", lambda m: f"{m[1]}{directory / 'error.log'}", 1)
    sub(r"^(\s*access_log\s+)(?!off;)\S+", lambda m: f"{m[1]}{directory / 'access.log'}", 1)
    sub(
        r"^(\s*(\w+)_temp_path\s+)\S+;",
        lambda m: f"{m[1]}{directory / (m[2] + '_temp')};",
        len(TEMP_PATHS),
    )
    code = "\n".join(line.split("#")[0] for line in text.splitlines()).replace(str(directory), "")
    for leftover in ("/var/", "/etc/", "/run/", "api:8000"):
        assert leftover not in code, f"{leftover} is still in the rendered config"
    conf = directory / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    return conf


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if found is None:
        message = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: required under CI", pytrace=False)
        pytest.skip(message)
    return found
