"""The set-up on a machine nobody touched, for each Debian release the project runs on.

scripts/fresh-root-check.sh debootstraps a minimal root of the release, runs
scripts/system-deps.sh in it (chroot, as root) and then scripts/check-tools.sh: every command
the suite and the compose stack call exists and starts there (PostgreSQL initdb/pg_ctl/psql,
nginx, chromium + chromedriver, node/npm, debootstrap, podman + runc + netavark + aardvark-dns +
the firewall tool netavark drives), and a container on a bridge and an internal podman network
resolves a service name (in a private network namespace). A third run takes the firewall
package out of the set-up script and expects the check to fail naming it: the check can fail.

The .debs are cached under .cache/fresh-root/ (about a minute and a half a release once warm).
Needs root, debootstrap and unshare; skipped without, failed under CI.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from facesvc.settings import PROJECT_ROOT
from tests.e2e.conftest import require_tool

pytestmark = pytest.mark.e2e

SCRIPTS = PROJECT_ROOT / "scripts"


def fresh_root(release: str, system_deps: Path | None = None) -> subprocess.CompletedProcess[str]:
    require_tool("debootstrap", "/usr/sbin/debootstrap", install="scripts/system-deps.sh")
    require_tool("unshare", install="apt-get install util-linux")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the fresh-root check needs root (debootstrap, chroot)", pytrace=False)
        pytest.skip("the fresh-root check needs root (debootstrap, chroot)")
    env = dict(os.environ)
    if system_deps is not None:
        env["SYSTEM_DEPS"] = str(system_deps)
    return subprocess.run(
        ["bash", str(SCRIPTS / "fresh-root-check.sh"), release],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_system_deps_make_every_tool_start_on_a_fresh_root(release: str) -> None:
    done = fresh_root(release)
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, output[-3000:]
    assert "check-tools: every command starts" in output
    for tool in ("postgresql", "chromium", "podman", "netavark", "container-net"):
        assert f"  ok    {tool} " in output, tool


def test_the_check_names_a_missing_firewall_tool(tmp_path: Path) -> None:
    """Debian 12's netavark 1.4 runs iptables: without it no container starts on a network, and
    the check says so in one line instead of an image build failing minutes later."""
    script = (SCRIPTS / "system-deps.sh").read_text(encoding="utf-8")
    chosen = "firewall_pkg=iptables firewall_bin=/usr/sbin/iptables"
    assert chosen in script, "system-deps.sh no longer chooses iptables this way: update the test"
    without = tmp_path / "system-deps-without-iptables.sh"
    without.write_text(script.replace(chosen, "firewall_pkg=bash firewall_bin=/bin/bash"))
    done = fresh_root("bookworm", without)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "runs iptables, which is not installed (apt-get install iptables)" in output
    assert "check-tools: FAILED: iptables container-net" in output
