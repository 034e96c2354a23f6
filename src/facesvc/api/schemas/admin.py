"""Administration: API keys, the audit log and the tenant's settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from facesvc.api.schemas.common import Page, Score, storable
from facesvc.db import models as db


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, examples=["kiosk-lobby"])
    scopes: list[Literal["admin", "enrol", "verify"]] = Field(
        min_length=1,
        max_length=3,
        description="admin: everything incl. keys and audit; enrol: users and faces; "
        "verify: verify, identify, compare",
        examples=[["verify"]],
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return storable(value)


class KeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None

    @classmethod
    def of(cls, key: db.ApiKey) -> KeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=sorted(key.scope_set),
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(
        description="The secret key. Shown only in this response: store it now",
        examples=["fsk_3q2v..."],
    )


class KeyList(BaseModel):
    items: list[KeyOut]


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # read straight off the audit row

    id: uuid.UUID
    created_at: datetime
    action: str = Field(examples=["verify"])
    result: str = Field(examples=["no-match"])
    actor: str = Field(description="The name of the key that acted", examples=["kiosk-lobby"])
    key_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    similarity: Score | None = None
    request_id: str | None = None


class AuditPage(Page[AuditEventOut]):
    pass


class TenantSettingsOut(BaseModel):
    """Settings of the caller's tenant."""

    name: str = Field(examples=["default"])
    require_liveness: bool = Field(
        description="Verification needs a passed liveness session (`liveness_session`)"
    )
    liveness_required_everywhere: bool = Field(
        description="FACESVC_LIVENESS_REQUIRED is on: every tenant needs liveness, whatever "
        "`require_liveness` says"
    )
    sensitive_attributes: bool = Field(
        description="`POST /v1/detect` may estimate age, gender and expression (off by "
        "default: 403 `attributes-not-enabled`); pose is always available"
    )

    @classmethod
    def of(cls, tenant: db.Tenant, required_everywhere: bool) -> TenantSettingsOut:
        return cls(
            name=tenant.name,
            require_liveness=tenant.require_liveness,
            liveness_required_everywhere=required_everywhere,
            sensitive_attributes=tenant.sensitive_attributes,
        )


class TenantSettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_liveness: bool | None = Field(
        default=None, description="Make verification need a passed liveness session"
    )
    sensitive_attributes: bool | None = Field(
        default=None,
        description="Let `POST /v1/detect` estimate age, gender and expression. Emotion "
        "recognition is prohibited at work and in education (EU AI Act Art. 5(1)(f)); "
        "emotion recognition and biometric categorisation are high-risk elsewhere "
        "(Annex III) and the people analysed must be told (Art. 50(3))",
    )
