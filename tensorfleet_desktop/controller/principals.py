"""Who is calling, and what they may do (issue 24): the one permission table both faces use.

A call's principal is decided once at the edge (security.py for gRPC, http/auth.py for HTTP, both through
tokens.TokenBook.authenticate) and held in a contextvar for the call, so handlers and the core read it without
knowing the transport. The table below names, per gRPC method, the least role it needs, what it does in words
(for the refusal), the audit action it records, and whether it acts on a job that must be the caller's own. HTTP
routes map onto these methods (HTTP_ROUTES), so one rule decides both faces."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ADMIN, USER, VIEWER = "admin", "user", "viewer"
ROLES = (ADMIN, USER, VIEWER)
_RANK = {VIEWER: 0, USER: 1, ADMIN: 2}


class PermissionDenied(Exception):
    """The caller is known but may not do this (gRPC PERMISSION_DENIED, HTTP 403)."""


class Unauthenticated(Exception):
    """The caller's token is unknown or revoked (gRPC UNAUTHENTICATED, HTTP 401)."""


@dataclass(frozen=True)
class Principal:
    name: str  # the user: a named token's name, or the OS user a client names with the controller's token
    role: str  # ADMIN, USER or VIEWER
    named_token: bool = False  # False: the controller's own client token (always an admin)

    def describe(self) -> str:
        """How refusals name the caller: `user bob (viewer)`."""
        return f"user {self.name or '(unnamed)'} ({self.role})"

    def at_least(self, role: str) -> bool:
        return _RANK.get(self.role, -1) >= _RANK[role]


#: In-process callers (tests, the core's own work) act as the system; a face always sets the caller.
SYSTEM = Principal("system", ADMIN)
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("tensorfleet_principal", default=SYSTEM)


def current() -> Principal:
    return _current.get()


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """The principal of everything run inside (one call's handler)."""
    token = _current.set(principal)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # a stream closed from another task (its context is gone anyway)
            _current.reset(token)


def user_of(submitter: str) -> str:
    """The user part of `user@host` (a job submitted before named tokens, or what a client sends)."""
    return submitter.split("@", 1)[0].strip()


def submitter_for(principal: Principal, sent: str) -> str:
    """A new job's submitter: a named token's name (what the client sends is ignored), else the OS user the
    client names in the request, else the one it names in its metadata, else "unknown"."""
    if principal.named_token:
        return principal.name
    return user_of(sent) or principal.name or UNKNOWN


#: The names the code falls back to or acts as: a token or a quota may not take one (a token named `unknown`
#: would own every job submitted without a user; `http` the HTTP face's unnamed submits; `system` is the
#: in-process caller in audit entries; `admin` names a token made by an unnamed admin, `nobody` a job without a
#: submitter in refusals). Compared case-insensitively.
UNKNOWN, HTTP_SUBMITTER = "unknown", "http"
RESERVED_NAMES = frozenset({SYSTEM.name, UNKNOWN, HTTP_SUBMITTER, "admin", "nobody"})


def reserved(name: str) -> str:
    """Why `name` may not name a user ("" when it may)."""
    if name.strip().lower() in RESERVED_NAMES:
        return f"{name.strip()!r} is reserved (the controller uses {', '.join(sorted(RESERVED_NAMES))} itself)"
    return ""


@dataclass(frozen=True)
class Rule:
    need: str  # the least role
    what: str  # "submit jobs": said in a refusal ("user bob (viewer) may not submit jobs")
    action: str = ""  # the audit log's action; "" = not recorded
    owned: bool = False  # acts on one job (its job_id): a non-admin only on their own
    verb: str = ""  # for an owned job's refusal: "only alice or an admin may cancel it"


def _read(what: str) -> Rule:
    return Rule(VIEWER, what)


#: Every ControllerService method but JoinCluster (its join credential admits it). A method not here is
#: admin-only (fail closed).
RULES: dict[str, Rule] = {
    # reading: every role
    **{
        m: _read("read")
        for m in [
            "GetInfo",
            "ListJobs",
            "GetJob",
            "WatchJob",
            "WatchJobs",
            "GetMetrics",
            "GetLogs",
            "ListAgents",
            "ListAgentEnvs",
            "GetAgentCache",
            "WatchAgents",
            "ListWorkloads",
            "ListDatasets",
            "PreviewDataset",
            "GetDataset",
            "ReadDatasetFile",
            "ListModels",
            "GetModel",
            "DownloadModel",
            "ModelStats",
            "ListArtifacts",
            "DownloadArtifact",
            "ListPools",
            "GetPool",
            "ListQuotas",
            "ListAudit",
        ]
    },
    # a user's own work
    "SubmitJob": Rule(USER, "submit jobs", "submit"),
    "SubmitJobs": Rule(USER, "submit jobs", "submit"),
    "CancelJob": Rule(USER, "cancel jobs", "cancel", owned=True, verb="cancel"),
    "PauseJob": Rule(USER, "pause jobs", "pause", owned=True, verb="pause"),
    "ResumeJob": Rule(USER, "resume jobs", "resume", owned=True, verb="resume"),
    "RetryJob": Rule(USER, "retry jobs", "retry", owned=True, verb="retry"),
    "DeleteJob": Rule(USER, "delete jobs", "delete_job", owned=True, verb="delete"),
    # not owned: the new job is the caller's own (reading the old one suffices), never a change to the old one
    "ResubmitJob": Rule(USER, "resubmit jobs", "resubmit"),
    # a dataset's versions and a model name's aliases, tags and descriptions are its owner's (or an admin's): the
    # catalog and the registry check that themselves (allow_owns), since the owner is known only there
    "UploadDataset": Rule(USER, "upload datasets", "dataset_upload"),
    "MissingBlobs": Rule(USER, "upload files"),
    "UploadBlobs": Rule(USER, "upload files"),
    "CommitDatasetVersion": Rule(USER, "add dataset versions", "dataset_commit"),
    "AddDatasetReference": Rule(USER, "add dataset references", "dataset_reference"),
    "SetModelAlias": Rule(USER, "set model aliases", "set_alias"),
    "RemoveModelAlias": Rule(USER, "remove model aliases", "remove_alias"),
    "TagModel": Rule(USER, "tag models", "tag_model"),
    "DescribeModel": Rule(USER, "describe models", "describe_model"),
    # the cluster's owner
    "DeleteDataset": Rule(ADMIN, "delete datasets", "delete_dataset"),
    "DeleteModel": Rule(ADMIN, "delete models", "delete_model"),
    "CollectGarbage": Rule(ADMIN, "collect garbage", "gc"),
    "AddAgent": Rule(ADMIN, "add agents", "add_agent"),
    "RemoveAgent": Rule(ADMIN, "remove agents", "remove_agent"),
    "DrainAgent": Rule(ADMIN, "drain agents", "drain_agent"),
    "WakeAgent": Rule(ADMIN, "wake agents", "wake_agent"),
    "PairAgent": Rule(ADMIN, "pair agents", "pair_agent"),
    "PruneAgentEnvs": Rule(ADMIN, "prune agents' envs", "prune_envs"),
    "AddPool": Rule(ADMIN, "add pools", "pool_add"),
    "RemovePool": Rule(ADMIN, "remove pools", "pool_remove"),
    "CreateJoinCredential": Rule(ADMIN, "create join credentials", "join_credential"),
    "CreateToken": Rule(ADMIN, "create tokens", "token_create"),
    "ListTokens": Rule(ADMIN, "list tokens"),
    "RevokeToken": Rule(ADMIN, "revoke tokens", "token_revoke"),
    "SetQuota": Rule(ADMIN, "set quotas", "quota_set"),
    "Shutdown": Rule(ADMIN, "shut the controller down", "shutdown"),
}
FAIL_CLOSED = Rule(ADMIN, "call this")

#: HTTP routes (method, path under /api/v1) as the gRPC method whose rule they follow. A GET not here reads
#: (every role); any other method not here is admin-only.
HTTP_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/jobs"): "SubmitJob",
    ("POST", "/jobs/{job_id}/cancel"): "CancelJob",
    ("POST", "/jobs/{job_id}/pause"): "PauseJob",
    ("POST", "/jobs/{job_id}/resume"): "ResumeJob",
    ("POST", "/jobs/{job_id}/retry"): "RetryJob",
    ("POST", "/jobs/{job_id}/resubmit"): "ResubmitJob",
    ("DELETE", "/jobs/{job_id}"): "DeleteJob",
    ("POST", "/agents/{agent}/drain"): "DrainAgent",
    ("POST", "/agents/{agent}/wake"): "WakeAgent",
    ("DELETE", "/agents/{agent}"): "RemoveAgent",
    ("PUT", "/datasets/{name}"): "UploadDataset",
    ("DELETE", "/datasets/{ref}"): "DeleteDataset",
    ("POST", "/datasets/blobs/missing"): "MissingBlobs",
    ("PUT", "/datasets/blobs/{sha256}"): "UploadBlobs",
    ("POST", "/datasets/{name}/versions"): "CommitDatasetVersion",
    ("POST", "/datasets/{name}/references"): "AddDatasetReference",
    ("PUT", "/models/{name}/aliases/{alias}"): "SetModelAlias",
    ("DELETE", "/models/{name}/aliases/{alias}"): "RemoveModelAlias",
    ("POST", "/models/{ref}/tags"): "TagModel",
    ("PATCH", "/models/{ref}"): "DescribeModel",
    ("DELETE", "/models/{ref}"): "DeleteModel",
    ("POST", "/tokens"): "CreateToken",
    ("GET", "/tokens"): "ListTokens",
    ("DELETE", "/tokens/{name}"): "RevokeToken",
    ("GET", "/audit"): "ListAudit",
    ("GET", "/quotas"): "ListQuotas",
    ("PUT", "/quotas/{user}"): "SetQuota",
}


def rule_for(method: str) -> Rule:
    """The rule of a gRPC method, by its short name (`CancelJob`) or full path (`/pkg.Service/CancelJob`)."""
    return RULES.get(method.rsplit("/", 1)[-1], FAIL_CLOSED)


def http_rule(method: str, path: str) -> tuple[str, Rule]:
    """The gRPC method an HTTP route follows (its route template under /api/v1) and that method's rule."""
    name = HTTP_ROUTES.get((method.upper(), path), "")
    if name:
        return name, rule_for(name)
    if method.upper() in ("GET", "HEAD"):
        return "", _read("read")
    return "", FAIL_CLOSED


def allow(principal: Principal, rule: Rule) -> None:
    """Raise PermissionDenied unless the principal's role may do what the rule covers."""
    if not principal.at_least(rule.need):
        raise PermissionDenied(f"{principal.describe()} may not {rule.what}")


def allow_owner(principal: Principal, rule: Rule, job_id: str, submitter: str) -> None:
    """A non-admin acts only on their own jobs (by the user part of the job's submitter)."""
    if not rule.owned or principal.at_least(ADMIN):
        return
    owner = user_of(submitter)
    if owner != principal.name:
        raise PermissionDenied(
            f"job {job_id[:8]} belongs to {owner or 'nobody'}: only {owner or 'its submitter'} or an admin may "
            f"{rule.verb or 'change'} it"
        )


def owner_name(principal: Principal) -> str:
    """Who a new dataset or model name made by `principal` belongs to: its user; "" (no owner, anyone's to add
    to) for an in-process caller or an unnamed admin."""
    return "" if principal == SYSTEM else principal.name


def allow_owns(principal: Principal, thing: str, owner: str, verb: str) -> None:
    """A non-admin changes a dataset's versions or a model's aliases, tags and descriptions only when they own it
    (`thing`: "dataset iris"; a thing recorded before owners has none and stays everyone's)."""
    if not owner or owner == principal.name or principal.at_least(ADMIN):
        return
    raise PermissionDenied(f"{thing} belongs to {owner}: only {owner} or an admin may {verb}")


def audit_user(principal: Principal, asked: str) -> str:
    """Whose audit entries a caller reads: an admin anyone's ("" = everyone's), others only their own."""
    if principal.at_least(ADMIN):
        return asked
    if asked and asked != principal.name:
        raise PermissionDenied(f"{principal.describe()} may read only their own audit entries, not {asked}'s")
    return principal.name
