"""`tensorfleet tokens` and `tensorfleet audit` (issue 24): the team's named client tokens and the audit log.

`tokens create NAME [--role admin|user|viewer]` prints the new token once (the controller keeps only its hash);
`tokens list [--all]`; `tokens revoke NAME`. `audit [--user U] [--action A] [--since 1h] [--limit N]` shows who
did what, newest first (an admin sees everyone's entries, others their own). `whoami` says who the controller takes
this client for."""

from __future__ import annotations

import argparse
import time
from typing import Any

from tensorfleet_agent.runtime.power import parse_duration
from tensorfleet_desktop.cli import exit_codes
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.cli.output import add_format_flags, csv_of, err, out, print_json, print_table, when
from tensorfleet_desktop.client import Client

ROLES = ("admin", "user", "viewer")
TOKEN_FIELDS = ("name", "role", "prefix", "created_at", "created_by", "last_used_at", "revoked")
AUDIT_FIELDS = ("seq", "time", "user", "role", "action", "target", "ok", "detail")


def add_parsers(sub: Any) -> None:
    s = sub.add_parser(
        "tokens",
        help="named client tokens: one per person, with a role (admin, user, viewer)",
        description="A named token stands for one person: jobs they submit are theirs, users control only their "
        "own jobs, viewers only read. Give the token to its holder as TENSORFLEET_CONTROLLER_TOKEN.",
    )
    s.set_defaults(call=tokens)
    add_format_flags(s, csv=True)
    tsub = s.add_subparsers(dest="tokens_command", metavar="ACTION", parser_class=type(s))
    ls = tsub.add_parser("list", help="the tokens (the default); --all: revoked ones too")
    ls.add_argument("--all", action="store_true", help="revoked tokens too")
    add_format_flags(ls, csv=True)
    c = tsub.add_parser("create", help="make a token for NAME and print it (once)")
    c.add_argument("name", metavar="NAME", help="who it stands for: letters, digits, '.', '_', '-' (up to 64)")
    c.add_argument("--role", choices=ROLES, default="user", help="what its holder may do (user)")
    add_format_flags(c)
    r = tsub.add_parser("revoke", help="refuse NAME's token at once (its open watches end too)")
    r.add_argument("name", metavar="NAME")
    add_format_flags(r)

    a = sub.add_parser("audit", help="who did what: submits, cancels, deletions, pairings, tokens, quotas")
    a.set_defaults(call=audit)
    a.add_argument("--user", default="", help="only this user's entries")
    a.add_argument("--action", default="", help="only this action (submit, cancel, delete_model, ...)")
    a.add_argument("--since", default="", metavar="DURATION", help="only the last DURATION (90s, 30m, 1h, 2d)")
    a.add_argument("--limit", type=int, default=200, metavar="N", help="at most N entries, newest first (200)")
    add_format_flags(a, csv=True)

    w = sub.add_parser("whoami", help="who the controller takes you for (your name and role)")
    w.set_defaults(call=whoami)
    add_format_flags(w)


def tokens(client: Client, args: argparse.Namespace) -> int:
    action = args.tokens_command or "list"
    if action == "create":
        made = client.create_token(args.name, args.role)
        if args.json:
            print_json(made)
        else:
            out.print(made["token"], markup=False, soft_wrap=True)
            err.print(
                f"token for {made['name']} ({made['role']}): shown this once; its holder sets "
                f"TENSORFLEET_CONTROLLER_TOKEN to it",
                markup=False,
            )
        return exit_codes.OK
    if action == "revoke":
        gone = client.revoke_token(args.name)
        if args.json:
            print_json(gone)
        else:
            out.print(f"revoked {gone['name']}'s token {gone['prefix']}", markup=False)
        return exit_codes.OK
    found = client.tokens(include_revoked=getattr(args, "all", False))
    if args.json:
        print_json(found)
    elif args.csv:
        csv_of(found, TOKEN_FIELDS)
    else:
        print_table(
            ("NAME", "ROLE", "TOKEN", "CREATED", "BY", "LAST USED", "REVOKED"),
            (
                (
                    t["name"],
                    t["role"],
                    f"{t['prefix']}_...",
                    when(t["created_at"]),
                    t["created_by"],
                    when(t["last_used_at"]),
                    "yes" if t["revoked"] else "",
                )
                for t in found
            ),
        )
    return exit_codes.OK


def since_of(text: str, now: float) -> float:
    """`--since 1h` as unix seconds (0: from the start)."""
    if not text.strip():
        return 0.0
    try:
        return now - parse_duration(text, "--since")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def audit(client: Client, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    found = client.audit(args.user.strip(), args.action.strip(), since_of(args.since, time.time()), args.limit)
    if args.json:
        print_json(found)
    elif args.csv:
        csv_of(found, AUDIT_FIELDS)
    else:
        print_table(
            ("SEQ", "TIME", "USER", "ACTION", "TARGET", "OK", "DETAIL"),
            (
                (
                    str(e["seq"]),
                    when(e["time"]),
                    f"{e['user']} ({e['role']})",
                    e["action"],
                    e["target"],
                    "ok" if e["ok"] else "refused",
                    e["detail"],
                )
                for e in found
            ),
        )
    return exit_codes.OK


def whoami(client: Client, args: argparse.Namespace) -> int:
    me = client.whoami()
    if args.json:
        print_json(me)
    else:
        how = "a named token" if me["named_token"] else "the controller's own client token"
        out.print(f"{me['name'] or '(unnamed)'} ({me['role']}, by {how})", markup=False)
    return exit_codes.OK
