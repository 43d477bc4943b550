"""The maintenance answer, as API.md names it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MaintenanceAnswer(BaseModel):
    allowances_granted: int = Field(description="period allowances granted (one per account and balance key)")
    grants_expired: int = Field(description="grants whose remainder expired")
    reservations_expired: int = Field(description="stale holds released, their amount available again")
    guest_sessions_deleted: int
    notices: int = Field(description="threshold notices recorded (75/90/100 % of an allowance, low balance)")
    more: bool = Field(description="true when due work is left for the next run")
    accounts: int = Field(0, description="accounts worked on")
    usage_lines_checked: int = Field(0, description="usage journal lines checked for notices for good")
    batches: int = Field(1, description="bounded batches this call ran")
    notices_delivered: int = Field(0, description="notices the app's webhook took (answered 2xx)")
    notices_failed: int = Field(0, description="notices the webhook did not take; offered again later")
    alerts: int = Field(
        0,
        description="operator alerts recorded (a day's cost or denials over their threshold, guest abuse, "
        "a model refused for having no price)",
    )
