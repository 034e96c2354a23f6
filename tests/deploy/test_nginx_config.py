"""nginx/nginx.conf, parsed: upload size, proxying, rate limits, retries, problem+json errors;
and checked by real nginx (``nginx -t``) when it is installed (under CI, ``CI`` set, it must be)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from facesvc.settings import Settings
from tests.support.deploy_files import (
    default_settings,
)
from tests.support.nginx import TEMP_PATHS, nginx_binary, render_nginx_conf
from tests.support.parsers import (
    Directive,
    choose_location,
    nginx_size,
)


def test_nginx_accepts_the_largest_upload(nginx_server: Directive) -> None:
    (directive,) = nginx_server.find("client_max_body_size")
    limit = nginx_size(directive.args[0])
    assert limit >= Settings.model_fields["max_upload_bytes"].default


def test_nginx_proxies_to_the_api_without_a_keepalive_pool(
    nginx: Directive, nginx_server: Directive
) -> None:
    (http,) = nginx.find("http")
    (upstream,) = http.find("upstream")
    assert [d.args for d in upstream.find("server")] == [["api:8000"]]
    # a pooled connection to a replica that is stopping turns a POST into a 502 (measured in
    # tests/e2e/test_compose.py); fresh connections are refused and retried on the other one
    assert not upstream.find("keepalive")
    assert [d.args for d in nginx_server.find("listen")] == [["80"]]
    assert nginx_server.find("proxy_http_version")[0].args == ["1.1"]
    headers = {d.args[0].lower(): d.args[1] for d in nginx_server.find("proxy_set_header")}
    assert headers["connection"] == "close"
    for name in ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-request-id"):
        assert name in headers, f"proxy_set_header {name} missing"
    for name in ("proxy_connect_timeout", "proxy_send_timeout", "proxy_read_timeout"):
        assert nginx_server.find(name), f"{name} missing"
    for loc in nginx_server.find("location"):
        if not loc.args[0].startswith("@"):
            assert loc.find("proxy_pass")[0].args == [f"http://{upstream.args[0]}"]
            assert not loc.find("proxy_set_header"), "would drop the server's proxy_set_header"


def test_nginx_rate_limits_the_api_but_not_the_probes(
    nginx: Directive, nginx_server: Directive
) -> None:
    from facesvc.app import create_app

    (http,) = nginx.find("http")
    zones = {
        arg.split("=", 1)[1].split(":")[0]
        for zone in http.find("limit_req_zone")
        for arg in zone.args
        if arg.startswith("zone=")
    }
    assert zones
    assert http.find("limit_req_status")[0].args == ["429"]

    schema = create_app(default_settings()).openapi()
    paths = {re.sub(r"\{[^}]+\}", "x", path) for path in schema["paths"]}
    assert {"/livez", "/readyz", "/v1/detect", "/face_login"} <= paths
    for path in sorted(paths):
        limits = choose_location(nginx_server, path).find("limit_req")
        if path in {"/livez", "/readyz"}:
            assert not limits, f"{path} is a probe: no rate limit"
        else:
            assert limits, f"{path} is not rate limited"
            assert any(a.startswith("zone=") and a[5:] in zones for a in limits[0].args)
            assert any(a.startswith("burst=") for a in limits[0].args)


# POSTs that store nothing but an audit row (verify: and a failed-attempt count): the only
# ones nginx may send to a second replica when the first went away before answering.
RETRYABLE_POSTS = {
    "/v1/detect",
    "/v1/landmarks",
    "/v1/embed",
    "/v1/identify",
    "/v1/compare",
    "/v1/users/x/verify",
    "/face_detect",
    "/face_landmark",
    "/face_login",
    "/upload",
}


def test_nginx_retries_only_posts_that_store_nothing(nginx_server: Directive) -> None:
    from facesvc.app import create_app

    schema = create_app(default_settings()).openapi()
    posts = {re.sub(r"\{[^}]+\}", "x", p) for p, ops in schema["paths"].items() if "post" in ops}
    assert posts >= RETRYABLE_POSTS
    for path in sorted(posts):
        retry = choose_location(nginx_server, path).find("proxy_next_upstream")
        retried = bool(retry) and "non_idempotent" in retry[0].args
        assert retried == (path in RETRYABLE_POSTS), path


def test_nginx_errors_are_problem_json(nginx_server: Directive) -> None:
    pages = {d.args[0]: d.args[-1] for d in nginx_server.find("error_page")}
    assert {"413", "429"} <= set(pages)
    named = {d.args[0]: d for d in nginx_server.find("location") if d.args[0].startswith("@")}
    for status, target in pages.items():
        location = named[target]
        assert location.find("default_type")[0].args == ["application/problem+json"]
        (ret,) = location.find("return")
        assert ret.args[0] == status
        body = json.loads(ret.args[1].replace("\\n", ""))
        assert body["status"] == int(status)
        assert {"type", "title"} <= set(body)


def test_real_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = nginx_binary()
    conf = render_nginx_conf(tmp_path, upstream="127.0.0.1:18000", listen="127.0.0.1:18080")
    result = subprocess.run(
        [binary, "-t", "-c", str(conf), "-p", f"{tmp_path}/", "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "test is successful" in output
    for name in TEMP_PATHS:
        assert (tmp_path / f"{name}_temp").is_dir()
