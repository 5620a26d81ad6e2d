"""Local audits that need no network: which roots this computer's TLS clients trust."""

from __future__ import annotations

from netvigil.audit.truststore import (
    AnchorDir,
    AuditReport,
    AuditSources,
    Finding,
    NssDatabase,
    ProfileParent,
    add_arguments,
    audit_trust_stores,
    run,
)

__all__ = [
    "AnchorDir",
    "AuditReport",
    "AuditSources",
    "Finding",
    "NssDatabase",
    "ProfileParent",
    "add_arguments",
    "audit_trust_stores",
    "run",
]
