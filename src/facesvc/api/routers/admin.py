"""API keys and the audit trail of the caller's tenant (admin scope)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, status

from facesvc.api.deps import AuditDep, KeyServiceDep, StateDep, TenantServiceDep, require_admin
from facesvc.api.problems import problem_responses
from facesvc.api.schemas import (
    AuditEventOut,
    AuditPage,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    TenantSettingsOut,
    TenantSettingsPatch,
)
from facesvc.errors import InvalidRequestError
from facesvc.services.audit import ACTIONS

AuditAction = Enum("AuditAction", {a.replace(".", "_"): a for a in ACTIONS}, type=str)  # type: ignore[misc]

router = APIRouter(
    prefix="/v1",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=problem_responses(401, 403),
)


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_key",
    summary="Create an API key in your tenant (the secret is shown once)",
    responses=problem_responses(400, 422),
)
async def create_key(
    body: Annotated[
        KeyCreate,
        Body(
            openapi_examples={
                "kiosk": {
                    "summary": "A verify-only key for a door kiosk",
                    "value": {"name": "kiosk-lobby", "scopes": ["verify"]},
                },
                "enrolment": {
                    "summary": "A key for the enrolment desk",
                    "value": {"name": "hr-desk", "scopes": ["enrol", "verify"]},
                },
            }
        ),
    ],
    keys: KeyServiceDep,
) -> KeyCreated:
    row, secret = await keys.create(body.name, list(body.scopes))
    return KeyCreated(**KeyOut.of(row).model_dump(), key=secret)


@router.get("/keys", operation_id="list_keys", summary="Your tenant's API keys (no secrets)")
async def list_keys(keys: KeyServiceDep) -> KeyList:
    return KeyList(items=[KeyOut.of(k) for k in await keys.list()])


@router.delete(
    "/keys/{key_id}",
    operation_id="revoke_key",
    summary="Revoke an API key (it stops working at once)",
    responses=problem_responses(404, 422),
)
async def revoke_key(
    key_id: Annotated[uuid.UUID, Path(description="The key's id")], keys: KeyServiceDep
) -> KeyOut:
    return KeyOut.of(await keys.revoke(key_id))


@router.get(
    "/audit",
    operation_id="list_audit_events",
    summary="Audit trail of your tenant, newest first",
    responses=problem_responses(422),
)
async def list_audit_events(
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Events per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Events to skip")] = 0,
    action: Annotated[AuditAction | None, Query(description="Only this action")] = None,
    user_id: Annotated[uuid.UUID | None, Query(description="Only events about this user")] = None,
    since: Annotated[
        datetime | None, Query(description="Only events at or after this time")
    ] = None,
) -> AuditPage:
    if since is not None and not 1970 <= since.year <= 9998:
        raise InvalidRequestError("`since` must be a date from 1970 on")
    if since is not None and since.tzinfo is None:
        since = since.astimezone()  # a naive time is the server's local time
    rows, total = await audit.page(
        limit=limit,
        offset=offset,
        action=None if action is None else action.value,
        user_id=user_id,
        since=since,
    )
    return AuditPage(
        items=[AuditEventOut.model_validate(event) for event in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/tenant", operation_id="get_tenant", summary="Your tenant's settings")
async def get_tenant(tenants: TenantServiceDep, state: StateDep) -> TenantSettingsOut:
    return TenantSettingsOut.of(await tenants.get(), state.policies.liveness.required)


@router.patch(
    "/tenant",
    operation_id="update_tenant",
    summary="Change your tenant's settings (require liveness for verification, allow age, "
    "gender and expression)",
    responses=problem_responses(400, 422),
)
async def update_tenant(
    body: Annotated[
        TenantSettingsPatch,
        Body(
            openapi_examples={
                "require": {
                    "summary": "Verification needs a passed liveness session",
                    "value": {"require_liveness": True},
                },
                "attributes": {
                    "summary": "Allow age, gender and expression in POST /v1/detect",
                    "value": {"sensitive_attributes": True},
                },
            }
        ),
    ],
    tenants: TenantServiceDep,
    state: StateDep,
) -> TenantSettingsOut:
    """`require_liveness: true`: `POST /v1/users/{id}/verify` (and the legacy login) answer
    422 `liveness-required` unless given a passed `liveness_session`.

    `sensitive_attributes: true`: `POST /v1/detect?attributes=` may ask for `age`, `gender`
    and `expression`; while it is false (the default) they answer 403
    `attributes-not-enabled`. Turn it on only where the law allows: the EU AI Act prohibits
    emotion recognition at work and in education (Art. 5(1)(f)). Each change is audited
    (`tenant.update`) and takes effect at the next request."""
    tenant = await tenants.update(
        require_liveness=body.require_liveness, sensitive_attributes=body.sensitive_attributes
    )
    return TenantSettingsOut.of(tenant, state.policies.liveness.required)
