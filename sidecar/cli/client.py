"""Client commands: operate a running sidecar over gRPC (check, accounts, subscriptions, ...).

Each command is one RPC; values are given as JSON or YAML scalars (`25`, `true`,
`unlimited`, `'{limit: 10, soft: true}'`), exactly as in the catalog file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import yaml
from google.protobuf import json_format

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ...protocol.values import to_struct, to_timestamp, to_value
from ..catalog.values import parse_time

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def channel(args: argparse.Namespace) -> grpc.Channel:
    target: str = args.target
    ca = os.environ.get("PLANGATE_TLS_CA")
    if ca:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(open(ca, "rb").read()))
    return grpc.insecure_channel(target)


def _metadata() -> list[tuple[str, str]]:
    token = os.environ.get("PLANGATE_TOKEN")
    return [("authorization", f"Bearer {token}")] if token else []


def _value(text: str) -> Any:
    """A value written as in the catalog (YAML/JSON); text that is not JSON data (a date, NaN)
    stays the string it was, for the sidecar to accept or explain."""
    try:
        value = yaml.safe_load(text)
        json.dumps(value, allow_nan=False)
    except yaml.YAMLError as exc:
        raise SystemExit(f"plangate: cannot read {text!r} as YAML/JSON: {exc}") from exc
    except (TypeError, ValueError):
        return text
    return value


def _mapping(text: str, option: str) -> Any:
    value = _value(text)
    if not isinstance(value, dict):
        raise SystemExit(
            f"plangate: {option} takes a mapping such as '{{region: eu}}', got {text!r}"
        )
    return value


def _time(text: str | None) -> Any:
    if text is None:
        return None
    at = parse_time(text)
    if at is None:
        raise SystemExit(f"plangate: {text!r} is not an ISO-8601 time such as 2026-12-31T00:00:00Z")
    return to_timestamp(at)


def _addons(pairs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        key, _, qty = pair.partition("=")
        try:
            out[key] = int(qty or 1)
        except ValueError:
            raise SystemExit(
                f"plangate: add-on {pair!r}: expected KEY=QUANTITY such as extra-seats=2"
            ) from None
    return out


def _print(message: Any) -> None:
    print(
        json.dumps(
            json_format.MessageToDict(
                message,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,  # "granted": false, not nothing
            ),
            indent=2,
            sort_keys=True,
        )
    )


def _call(args: argparse.Namespace, service: str, method: str, request: Any) -> int:
    stubs: dict[str, Callable[[grpc.Channel], Any]] = {
        "eval": pb_grpc.EvaluationStub,
        "usage": pb_grpc.UsageStub,
        "admin": pb_grpc.AdminStub,
    }
    with channel(args) as ch:
        stub = stubs[service](ch)
        try:
            reply = getattr(stub, method)(request, metadata=_metadata(), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"plangate: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    _print(reply)
    return 0


def add_commands(sub: Sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        default=os.environ.get("PLANGATE_TARGET", "localhost:8013"),
        help="sidecar address [PLANGATE_TARGET]",
    )
    common.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the sidecar"
    )

    p = sub.add_parser(
        "check",
        parents=[common],
        help="evaluate one feature for one account",
        description="Evaluate one feature for one account and print the whole decision.",
    )
    p.add_argument("account")
    p.add_argument("feature")
    p.add_argument(
        "--requested", type=float, help="amount to check a metered feature for (default 1)"
    )
    p.set_defaults(
        func=lambda a: _call(
            a,
            "eval",
            "Evaluate",
            pb.EvaluateRequest(
                account_id=a.account,
                feature=a.feature,
                context=to_struct({} if a.requested is None else {"requested": a.requested}),
            ),
        )
    )

    _accounts(sub, common)
    _subscriptions(sub, common)
    _overrides(sub, common)
    _grants(sub, common)
    _usage(sub, common)
    _deliveries(sub, common)


def _group(sub: Sub, name: str, help: str) -> Sub:
    p = sub.add_parser(name, help=help, description=help)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")


def _accounts(sub: Sub, common: argparse.ArgumentParser) -> None:
    g = _group(sub, "accounts", "create, show, list and delete accounts")
    p = g.add_parser("upsert", parents=[common], help="create or update an account")
    p.add_argument("id")
    p.add_argument("--name", default="")
    p.add_argument("--attributes", default="{}", help="JSON/YAML mapping of custom fields")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "UpsertAccount",
            pb.UpsertAccountRequest(
                id=a.id, name=a.name, attributes=to_struct(_mapping(a.attributes, "--attributes"))
            ),
        )
    )
    p = g.add_parser("get", parents=[common], help="show one account")
    p.add_argument("id")
    p.set_defaults(func=lambda a: _call(a, "admin", "GetAccount", pb.GetAccountRequest(id=a.id)))
    p = g.add_parser("list", parents=[common], help="list accounts")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--after", default="", help="the last id of the previous page")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "ListAccounts",
            pb.ListAccountsRequest(page_size=a.page_size, page_token=a.after),
        )
    )
    p = g.add_parser("delete", parents=[common], help="delete an account created through the API")
    p.add_argument("id")
    p.set_defaults(
        func=lambda a: _call(a, "admin", "DeleteAccount", pb.DeleteAccountRequest(id=a.id))
    )


def _subscriptions(sub: Sub, common: argparse.ArgumentParser) -> None:
    g = _group(
        sub,
        "subscriptions",
        "subscribe accounts to plans, change plans and add-ons, members, cancel",
    )
    p = g.add_parser("create", parents=[common], help="subscribe an account to a plan")
    p.add_argument("account")
    p.add_argument("plan")
    p.add_argument(
        "--addon",
        action="append",
        default=[],
        metavar="KEY=QTY",
        help="add-on and quantity (repeatable)",
    )
    p.add_argument(
        "--member",
        action="append",
        default=[],
        help="account sharing this subscription (repeatable)",
    )
    p.add_argument("--starts-at")
    p.add_argument("--ends-at")
    p.add_argument("--trial-ends-at")
    p.add_argument("--id", default="")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "CreateSubscription",
            pb.CreateSubscriptionRequest(
                account_id=a.account,
                plan=a.plan,
                addons=_addons(a.addon),
                members=a.member,
                id=a.id,
                starts_at=_time(a.starts_at),
                ends_at=_time(a.ends_at),
                trial_ends_at=_time(a.trial_ends_at),
            ),
        )
    )
    p = g.add_parser("change-plan", parents=[common], help="move a subscription to another plan")
    p.add_argument("account")
    p.add_argument("subscription")
    p.add_argument("plan")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "ChangePlan",
            pb.ChangePlanRequest(account_id=a.account, subscription_id=a.subscription, plan=a.plan),
        )
    )
    p = g.add_parser("set-addons", parents=[common], help="replace a subscription's add-ons")
    p.add_argument("account")
    p.add_argument("subscription")
    p.add_argument("addons", nargs="*", metavar="KEY=QTY")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "ChangeAddOns",
            pb.ChangeAddOnsRequest(
                account_id=a.account, subscription_id=a.subscription, addons=_addons(a.addons)
            ),
        )
    )
    p = g.add_parser("cancel", parents=[common], help="end a subscription (now, or --at)")
    p.add_argument("account")
    p.add_argument("subscription")
    p.add_argument("--at")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "CancelSubscription",
            pb.CancelSubscriptionRequest(
                account_id=a.account, subscription_id=a.subscription, at=_time(a.at)
            ),
        )
    )
    for action, method, help in (
        ("add-member", "AddMember", "let another account share a subscription"),
        ("remove-member", "RemoveMember", "stop sharing a subscription"),
    ):
        p = g.add_parser(action, parents=[common], help=help)
        p.add_argument("account")
        p.add_argument("subscription")
        p.add_argument("member")
        p.set_defaults(
            func=lambda a, m=method: _call(
                a,
                "admin",
                m,
                pb.MemberRequest(
                    account_id=a.account, subscription_id=a.subscription, member_id=a.member
                ),
            )
        )


def _overrides(sub: Sub, common: argparse.ArgumentParser) -> None:
    g = _group(sub, "overrides", "set or clear per-account feature overrides")
    p = g.add_parser("set", parents=[common], help="override a feature for an account")
    p.add_argument("account")
    p.add_argument("feature")
    p.add_argument(
        "value", help="as in the catalog: 25, true, unlimited, '{limit: 10, soft: true}'"
    )
    p.add_argument("--expires-at")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "SetOverride",
            pb.SetOverrideRequest(
                account_id=a.account,
                feature=a.feature,
                value=to_value(_value(a.value)),
                expires_at=_time(a.expires_at),
            ),
        )
    )
    p = g.add_parser("clear", parents=[common], help="remove an override")
    p.add_argument("account")
    p.add_argument("feature")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "ClearOverride",
            pb.ClearOverrideRequest(account_id=a.account, feature=a.feature),
        )
    )


def _grants(sub: Sub, common: argparse.ArgumentParser) -> None:
    g = _group(sub, "grants", "create or revoke promotional grants")
    p = g.add_parser("create", parents=[common], help="grant a feature value for a time")
    p.add_argument("account")
    p.add_argument("feature")
    p.add_argument("value")
    p.add_argument("--starts-at")
    p.add_argument("--ends-at")
    p.add_argument("--id", default="")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "CreateGrant",
            pb.CreateGrantRequest(
                account_id=a.account,
                feature=a.feature,
                value=to_value(_value(a.value)),
                id=a.id,
                starts_at=_time(a.starts_at),
                ends_at=_time(a.ends_at),
            ),
        )
    )
    p = g.add_parser("revoke", parents=[common], help="revoke a grant")
    p.add_argument("account")
    p.add_argument("grant")
    p.set_defaults(
        func=lambda a: _call(
            a, "admin", "RevokeGrant", pb.RevokeGrantRequest(account_id=a.account, grant_id=a.grant)
        )
    )


def _usage(sub: Sub, common: argparse.ArgumentParser) -> None:
    g = _group(sub, "usage", "report, consume and reset usage")
    p = g.add_parser("report", parents=[common], help="report usage of a metered feature")
    p.add_argument("account")
    p.add_argument("feature")
    p.add_argument("amount", type=float, nargs="?", default=1.0)
    p.add_argument("--set", action="store_true", help="set the counter instead of adding")
    p.add_argument("--unique-key", default="")
    p.add_argument("--idempotency-key", default="")
    p.add_argument("--at", help="when it happened (default now)")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "usage",
            "Report",
            pb.ReportRequest(
                reports=[
                    pb.UsageReport(
                        account_id=a.account,
                        feature=a.feature,
                        amount=a.amount,
                        unique_key=a.unique_key,
                        mode=pb.USAGE_MODE_SET if a.set else pb.USAGE_MODE_UNSPECIFIED,
                        idempotency_key=a.idempotency_key,
                        timestamp=_time(a.at),
                    )
                ]
            ),
        )
    )
    p = g.add_parser("consume", parents=[common], help="check and record in one step")
    p.add_argument("account")
    p.add_argument("feature")
    p.add_argument("amount", type=float, nargs="?", default=1.0)
    p.add_argument("--idempotency-key", default="")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "usage",
            "Consume",
            pb.ConsumeRequest(
                account_id=a.account,
                feature=a.feature,
                amount=a.amount,
                idempotency_key=a.idempotency_key,
            ),
        )
    )
    p = g.add_parser(
        "reset", parents=[common], help="start a fresh period for an account's feature"
    )
    p.add_argument("account")
    p.add_argument("feature")
    p.set_defaults(
        func=lambda a: _call(
            a, "admin", "ResetUsage", pb.ResetUsageRequest(account_id=a.account, feature=a.feature)
        )
    )


def _deliveries(sub: Sub, common: argparse.ArgumentParser) -> None:
    g = _group(sub, "deliveries", "list and retry quota webhooks and actions (the outbox)")
    p = g.add_parser("list", parents=[common], help="list deliveries, newest first")
    p.add_argument("--status", choices=["pending", "failed", "delivered"])
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token", default="", help="next_page_token of the previous page")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "ListDeliveries",
            pb.ListDeliveriesRequest(
                status=a.status or "", page_size=a.page_size, page_token=a.page_token
            ),
        )
    )
    p = g.add_parser("retry", parents=[common], help="make a failed (or pending) delivery due now")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("id", nargs="?", help="the delivery id (from `deliveries list`)")
    target.add_argument("--all-failed", action="store_true", help="retry every failed delivery")
    p.set_defaults(
        func=lambda a: _call(
            a,
            "admin",
            "RetryDelivery",
            pb.RetryDeliveryRequest(id=a.id or "", all_failed=a.all_failed),
        )
    )
