"""Clients generated from the served /openapi.json, used against a real server.

Python: ``openapi-python-client`` generates a package into a temp dir; the test imports it
and runs the main flow with it (create a user, enrol two photos, verify, identify, delete).
TypeScript: ``openapi-typescript`` (npm, pinned in clients/ts/package-lock.json) generates
types, ``tsc`` type-checks clients/ts/usage.ts against them, and the compiled usage file runs
the same flow with fetch under Node. Node and npm are optional locally, required under CI.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import require_tool
from tests.support.data import LFW, lfw_image
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLIENTS_TS = ROOT / "clients" / "ts"
PACKAGE = "facesvc_client"


@pytest.fixture(scope="module")
def served_schema(live_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    status, body = live_server.get("/openapi.json")
    assert status == 200
    path = tmp_path_factory.mktemp("schema") / "openapi.json"
    path.write_bytes(body)
    return path


def run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} exited with {done.returncode}:\n{output}"
    return done


# --- Python -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def python_client(served_schema: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The generated package, imported from a temp dir (and forgotten afterwards)."""
    generator = Path(sys.executable).with_name("openapi-python-client")
    assert generator.is_file(), "openapi-python-client is a dev dependency: reinstall .[dev]"
    out = tmp_path_factory.mktemp("python-client")
    config = out / "config.yaml"
    config.write_text("post_hooks: []\n", encoding="utf-8")  # no formatting needed to run it
    done = run(
        [
            str(generator),
            "generate",
            "--path",
            str(served_schema),
            "--meta",
            "none",
            "--output-path",
            str(out / PACKAGE),
            "--config",
            str(config),
        ],
        cwd=out,
        timeout=180,
    )
    # A warning means part of the API was left out of the client (an unsupported schema).
    output = done.stdout + done.stderr
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def submodule(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_generated_python_client_runs_the_main_flow(
    python_client: Any, live_server: ServerProcess
) -> None:
    models = submodule("models")
    file_type = submodule("types").File
    users = {n: submodule(f"api.users.{n}") for n in ("create_user", "enrol_face", "delete_user")}
    get_user = submodule("api.users.get_user")
    verify_user = submodule("api.recognition.verify_user")
    identify_face = submodule("api.recognition.identify_face")

    sent_keys: list[str | None] = []

    def record(request: httpx.Request) -> None:
        sent_keys.append(request.headers.get("X-API-Key"))

    client = python_client.AuthenticatedClient(
        base_url=live_server.base_url,
        token=live_server.api_key,
        prefix="",  # the ApiKey scheme: the bare key in X-API-Key
        auth_header_name="X-API-Key",
        timeout=httpx.Timeout(60),
        raise_on_unexpected_status=True,
        httpx_args={"event_hooks": {"request": [record]}},
    )

    def photo(number: int) -> Any:
        data = lfw_image("Tony_Blair", number)
        return file_type(payload=BytesIO(data), file_name=f"{number}.jpg", mime_type="image/jpeg")

    with client:
        user = users["create_user"].sync(
            client=client,
            body=models.UserCreate(name="Tony Blair", external_id=f"py-{uuid.uuid4().hex[:8]}"),
        )
        assert isinstance(user, models.UserOut), user
        user_id = user.id
        assert isinstance(user_id, uuid.UUID)

        for number in (1, 2):
            face = users["enrol_face"].sync(
                user_id=user_id,
                client=client,
                body=models.BodyEnrolFace(image=photo(number), consent=True),
            )
            assert isinstance(face, models.FaceOut), face
            assert face.user_id == user_id
            assert face.box.width > 20

        verified = verify_user.sync(
            user_id=user_id, client=client, body=models.BodyVerifyUser(image=photo(3))
        )
        assert isinstance(verified, models.VerifyResponse), verified
        assert verified.match is True, verified
        assert verified.faces_compared == 2
        assert isinstance(verified.similarity, float)
        assert verified.similarity >= verified.threshold
        assert isinstance(verified.probability, float)
        assert verified.probability > 0.5

        found = identify_face.sync(
            client=client, body=models.BodyIdentifyFace(image=photo(4)), top_k=3
        )
        assert isinstance(found, models.IdentifyResponse), found
        assert found.match == user_id, found
        assert found.candidates[0].name == "Tony Blair"

        deleted = users["delete_user"].sync_detailed(user_id=user_id, client=client)
        assert deleted.status_code == 204

        # Errors come back as the schema's Problem (application/problem+json).
        missing = get_user.sync_detailed(user_id=user_id, client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Problem), missing.content
        assert missing.parsed.type_ == "/problems/user-not-found"

    assert sent_keys, "no request went through the client"
    assert set(sent_keys) == {live_server.api_key}, "the ApiKey scheme was not sent as X-API-Key"


def test_generated_python_client_runs_a_liveness_session_and_attributes(
    python_client: Any, live_server: ServerProcess
) -> None:
    """Start a session, send it frames (a still photo: it fails as no-motion), read it, and
    see a login with it refused with the schema's Problem; then detect with attributes,
    refused until the tenant turns them on with update_tenant."""
    models = submodule("models")
    file_type = submodule("types").File
    create = submodule("api.liveness.create_liveness_session")
    add_frames = submodule("api.liveness.add_liveness_frames")
    get_session = submodule("api.liveness.get_liveness_session")
    verify_user = submodule("api.recognition.verify_user")

    client = python_client.AuthenticatedClient(
        base_url=live_server.base_url,
        token=live_server.api_key,
        prefix="",
        auth_header_name="X-API-Key",
        timeout=httpx.Timeout(60),
    )
    photo = lfw_image("Tony_Blair", 5)

    def frame() -> Any:
        return file_type(payload=BytesIO(photo), file_name="frame.jpg", mime_type="image/jpeg")

    with client:
        session = create.sync(client=client)
        assert isinstance(session, models.LivenessSessionOut), session
        assert session.status == models.LivenessSessionOutStatus.IN_PROGRESS
        assert len(session.challenges) == 3
        assert session.current.value == session.challenges[0].value

        after = add_frames.sync(
            session_id=session.id,
            client=client,
            body=models.BodyAddLivenessFrames(frames=[frame(), frame()]),
        )
        assert isinstance(after, models.LivenessSessionOut), after
        assert after.status == models.LivenessSessionOutStatus.FAILED
        assert after.reason == "no-motion"
        assert after.frame_results is not None
        assert after.frame_results[0].faces == 1
        again = get_session.sync(session_id=session.id, client=client)
        assert isinstance(again, models.LivenessSessionOut)
        assert again.frames == 2  # the repeated frame ended it

        refused = verify_user.sync_detailed(
            user_id=uuid.uuid4(),
            client=client,
            body=models.BodyVerifyUser(image=frame()),
            liveness_session=session.id,
        )
        assert refused.status_code == 409
        assert isinstance(refused.parsed, models.Problem), refused.content
        assert refused.parsed.type_ == "/problems/liveness-not-passed"

        # face attributes through the same client: gender is refused (the schema's Problem)
        # until the tenant turns sensitive attributes on; then only what is asked is computed
        detect_faces = submodule("api.analysis.detect_faces")
        update_tenant = submodule("api.admin.update_tenant")
        refused_gender = detect_faces.sync_detailed(
            client=client, body=models.BodyDetectFaces(image=frame()), attributes="gender,pose"
        )
        assert refused_gender.status_code == 403
        assert isinstance(refused_gender.parsed, models.Problem), refused_gender.content
        assert refused_gender.parsed.type_ == "/problems/attributes-not-enabled"
        assert '{"sensitive_attributes": true}' in refused_gender.parsed.detail
        tenant = update_tenant.sync(
            client=client, body=models.TenantSettingsPatch(sensitive_attributes=True)
        )
        assert isinstance(tenant, models.TenantSettingsOut), tenant
        assert tenant.sensitive_attributes is True
        try:
            found = detect_faces.sync(
                client=client,
                body=models.BodyDetectFaces(image=frame()),
                attributes="gender,pose",
            )
        finally:  # the session's server is shared: leave its default tenant as it was
            update_tenant.sync(
                client=client, body=models.TenantSettingsPatch(sensitive_attributes=False)
            )
        assert isinstance(found, models.DetectResponse), found
        (face,) = found.faces
        assert face.attributes.gender.value.value == "male"  # Tony Blair
        assert abs(face.attributes.pose.yaw) < 30
        assert face.attributes.age is None


# --- TypeScript -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ts_tools() -> Path:
    """clients/ts/node_modules/.bin after ``npm ci`` (the versions in package-lock.json)."""
    npm = require_tool("npm", install="apt-get install nodejs npm (Node 18 or later)")
    require_tool("node", install="apt-get install nodejs (Node 18 or later)")
    run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=CLIENTS_TS, timeout=600)
    bin_dir = CLIENTS_TS / "node_modules" / ".bin"
    assert (bin_dir / "openapi-typescript").exists()
    assert (bin_dir / "tsc").exists()
    return bin_dir


@pytest.fixture(scope="module")
def ts_generated(
    ts_tools: Path, served_schema: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """clients/ts's usage.ts and tsconfig.json beside types generated from the served schema."""
    project = tmp_path_factory.mktemp("ts")
    for name in ("usage.ts", "tsconfig.json"):
        shutil.copy(CLIENTS_TS / name, project / name)
    run(
        [str(ts_tools / "openapi-typescript"), str(served_schema), "--output", "facesvc.d.ts"],
        cwd=project,
    )
    types = (project / "facesvc.d.ts").read_text(encoding="utf-8")
    assert '"/v1/users/{user_id}/verify"' in types
    assert "verify_user: {" in types
    return project


@pytest.fixture
def ts_project(ts_generated: Path, tmp_path: Path) -> Path:
    """A copy a test may change."""
    return Path(shutil.copytree(ts_generated, tmp_path / "ts"))


def tsc(ts_tools: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ts_tools / "tsc"), "-p", "tsconfig.json", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_typescript_usage_type_checks_against_generated_types(
    ts_tools: Path, ts_project: Path
) -> None:
    done = tsc(ts_tools, ts_project, "--noEmit")
    assert (done.returncode, done.stdout.strip()) == (0, ""), done.stdout + done.stderr


def test_typescript_usage_type_check_fails_on_a_wrong_field(
    ts_tools: Path, ts_project: Path
) -> None:
    """The types are real: using a field the schema does not have is a compile error."""
    usage = ts_project / "usage.ts"
    usage.write_text(
        usage.read_text(encoding="utf-8")
        + '\nexport const wrong: NewUser = { name: "x", nickname: "y" };\n',
        encoding="utf-8",
    )
    done = tsc(ts_tools, ts_project, "--noEmit")
    assert done.returncode != 0
    assert "nickname" in done.stdout + done.stderr


RUNNER = """\
import { readFileSync } from "node:fs";
import { Facesvc, mainFlow } from "./usage.js";

const [baseUrl, apiKey, name, ...paths] = process.argv.slice(2);
const photos = paths.map((p) => new Blob([readFileSync(p)], { type: "image/jpeg" }));
const result = await mainFlow(new Facesvc(baseUrl, apiKey), name, photos.slice(0, 2), photos[2]);
console.log(JSON.stringify(result));
"""


def test_typescript_usage_runs_the_main_flow_under_node(
    ts_tools: Path, ts_project: Path, live_server: ServerProcess, data_dir: Path
) -> None:
    dist = ts_project / "dist"
    # Checked by the test above; here only compiled to JavaScript for Node.
    done = tsc(ts_tools, ts_project, "--outDir", str(dist), "--noCheck")
    assert done.returncode == 0, done.stdout + done.stderr
    (dist / "package.json").write_text('{"type": "module"}\n', encoding="utf-8")
    (dist / "run.js").write_text(RUNNER, encoding="utf-8")
    photos = [str(LFW / "Gerhard_Schroeder" / f"Gerhard_Schroeder_{n:04d}.jpg") for n in (1, 2, 3)]
    node = require_tool("node", install="apt-get install nodejs (Node 18 or later)")
    flow = run(
        [node, "run.js", live_server.base_url, live_server.api_key, "Gerhard Schroeder", *photos],
        cwd=dist,
        timeout=120,
    )
    result = json.loads(flow.stdout.strip().splitlines()[-1])
    assert result["facesEnrolled"] == 2, result
    assert result["verified"] is True, result
    assert result["probability"] > 0.5, result
    assert result["identified"] == result["userId"], result
    assert result["deleted"] is True, result
