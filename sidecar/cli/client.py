"""Client commands: operate a running sidecar over gRPC (check, accounts, subscriptions, ...).

Each command is one row of `COMMANDS`: its words, its arguments, the RPC it calls, how it
builds the request, how it shows the reply to people and what in a reply counts as a
failure. `add_commands` turns the rows into argparse sub-commands, so every command takes
the same `--target`, `--timeout` and `--json` and follows the same exit codes (EXIT_CODES).
Values are given as JSON or YAML scalars (`25`, `true`, `unlimited`,
`'{limit: 10, soft: true}'`), exactly as in the catalog file.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import yaml
from google.protobuf.message import Message

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ...protocol.plangate.v1 import plangate_pb2_grpc as pb_grpc
from ...protocol.values import to_struct, to_timestamp, to_value
from . import output

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]

OK, FAILED, USAGE = 0, 1, 2
EXIT_CODES = """\
exit codes:
  0  done; the answer is printed
  1  an error or a rejection: an evaluation error (FLAG_NOT_FOUND, INVALID_CONTEXT,
     TYPE_MISMATCH, ...), a rejected usage report, a denied consume, or a request the
     sidecar refused (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, UNAUTHENTICATED)
  2  a usage error (bad arguments), or the sidecar cannot be reached
"""
UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class UsageError(Exception):
    """Arguments that cannot be sent; the message says what to write instead (exit 2)."""


# -- reading arguments -----------------------------------------------------------------------


def _value(text: str) -> Any:
    """A value written as in the catalog (YAML/JSON); text that is not JSON data (a date, NaN)
    stays the string it was, for the sidecar to accept or explain."""
    try:
        value = yaml.safe_load(text)
        json.dumps(value, allow_nan=False)
    except yaml.YAMLError as exc:
        raise UsageError(f"cannot read {text!r} as YAML/JSON: {exc}") from exc
    except (TypeError, ValueError):
        return text
    return value


def _mapping(text: str, option: str) -> Any:
    value = _value(text)
    if not isinstance(value, dict):
        raise UsageError(f"{option} takes a mapping such as '{{region: eu}}', got {text!r}")
    return value


def _time(text: str | None) -> Any:
    from ..catalog.values import parse_time  # here: the catalog package is slow to import

    if text is None:
        return None
    at = parse_time(text)
    if at is None:
        raise UsageError(f"{text!r} is not an ISO-8601 time such as 2026-12-31T00:00:00Z")
    return to_timestamp(at)


def _schedule(text: str | None) -> dict[str, Any]:
    """`--at now|period_end|TIME` as the request fields `when` or `at` (design §6.1)."""
    if text is None:
        return {}
    if text in ("now", "period_end"):
        return {"when": text}
    return {"at": _time(text)}


def _addons(pairs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for pair in pairs:
        key, _, qty = pair.partition("=")
        try:
            out[key] = int(qty or 1)
        except ValueError:
            raise UsageError(
                f"add-on {pair!r}: expected KEY=QUANTITY such as extra-seats=2"
            ) from None
    return out


# -- one call ----------------------------------------------------------------------------------


class Call:
    """A command's connection to the sidecar, with the catalog's feature keys on demand."""

    def __init__(self, args: argparse.Namespace, channel: grpc.Channel) -> None:
        self.args = args
        self.channel = channel
        token = os.environ.get("PLANGATE_TOKEN")
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def stub(self, service: str) -> Any:
        return getattr(pb_grpc, f"{service}Stub")(self.channel)

    def rpc(self, name: str, request: Message) -> Any:
        service, method = name.split(".")
        call = getattr(self.stub(service), method)
        return call(request, metadata=self.metadata, timeout=self.args.timeout)

    @cached_property
    def features(self) -> list[str]:
        """Every feature key of the served catalog: the `ready` message of `Watch` lists them."""
        stream = self.stub("Evaluation").Watch(
            pb.WatchRequest(), metadata=self.metadata, timeout=self.args.timeout
        )
        try:
            return list(next(stream).ready.all_features)
        except (grpc.RpcError, StopIteration):
            return []
        finally:
            stream.cancel()

    def unknown_feature(self, feature: str) -> str | None:
        """`unknown feature 'sso2'; did you mean 'sso'?`, or None when the feature exists."""
        keys = self.features
        if not keys or feature in keys:
            return None
        close = difflib.get_close_matches(feature, keys, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown feature {feature!r}{hint}"


def channel(args: argparse.Namespace) -> grpc.Channel:
    target: str = args.target
    ca = os.environ.get("PLANGATE_TLS_CA")
    if ca:
        with open(ca, "rb") as pem:
            return grpc.secure_channel(target, grpc.ssl_channel_credentials(pem.read()))
    return grpc.insecure_channel(target)


# -- showing replies ---------------------------------------------------------------------------

Shown = dict[str, Any]


def _fields(reply: Shown, args: argparse.Namespace) -> str:
    return output.fields(reply)


def _check(reply: Shown, args: argparse.Namespace) -> str:
    text = output.resolution(reply)
    if not reply.get("explain"):
        return text
    return text + "\n" + _trail(json.loads(reply["explain"]))


def _trail(t: Shown) -> str:
    """The explain trail (design §4.1), one step a line, in the order evaluation takes them."""
    value = output.value_text
    lines = ["  trail:"]
    if t.get("archived"):
        lines.append("    archived: the default for everyone")
    override = t.get("override")
    lines.append(f"    1  override   {value(override['value']) if override else 'none'}")
    targeting = t.get("targeting")
    if targeting is None:
        step = "none (the feature has no targeting)"
    elif "skipped" in targeting:
        step = f"skipped: {targeting['skipped']}"
    elif targeting.get("error"):
        step = f"error: {targeting['error']}"
    else:
        picked = targeting.get("variant")
        step = f"variant {picked}" if picked is not None else "null (falls through)"
        step += "  (volatile: reads $flagd.timestamp)" if targeting.get("volatile") else ""
    lines.append(f"    1b targeting  {step}")
    for c in t.get("candidates", []):
        verdict = "won" if c.get("won") else f"lost: {c.get('why')}"
        lines.append(f"    2  {c['source']:<10} {value(c['value'])}  {verdict}")
    if not t.get("candidates"):
        lines.append("    2  sources    none")
    winner = t.get("winner")
    if winner:
        lines.append(
            f"    => {winner['source']}  {value(winner['value'])}  (reason {winner['reason']})"
        )
    return "\n".join(lines)


def _report(reply: Shown, args: argparse.Namespace) -> str:
    result = reply["results"][0]
    text = f"{args.feature}  {result['status']}  usage {output.number(result.get('usage', 0))}"
    return text + (f"\n  why: {result['message']}" if result.get("message") else "")


def _consume(reply: Shown, args: argparse.Namespace) -> str:
    word = "granted" if reply.get("granted") else f"denied ({reply.get('denial', '?')})"
    if reply.get("duplicate"):
        word += ", duplicate"
    lines = [f"{args.feature}  {word}  usage {output.number(reply.get('usage', 0))}"]
    if "resolution" in reply and "metering" in reply["resolution"]:
        lines.append(f"  {output.usage_bar(reply['resolution']['metering'])}")
    return "\n".join(lines)


def _subscriptions(subs: list[Shown]) -> list[list[str]]:
    return [
        [
            s.get("id", ""),
            s.get("plan", ""),
            ", ".join(f"{k}×{q}" for k, q in s.get("addons", {}).items()) or "-",
            output.day(s["starts_at"]) if "starts_at" in s else "-",
            output.day(s["ends_at"]) if "ends_at" in s else "-",
            ", ".join(s.get("members", [])) or "-",
            "; ".join(_phase(p) for p in s.get("phases", [])) or "-",
        ]
        for s in subs
    ]


def _phase(phase: Shown) -> str:
    """A scheduled change as `pro+extra-seats×2 from 2026-03-01`."""
    addons = "".join(f"+{k}×{q}" for k, q in phase.get("addons", {}).items())
    return f"{phase.get('plan', '')}{addons} from {output.day(phase['starts_at'])}"


def _subscription_table(reply: Shown, args: argparse.Namespace) -> str:
    return output.table(
        _subscriptions(reply.get("subscriptions", [])),
        ["ID", "PLAN", "ADD-ONS", "STARTS", "ENDS", "MEMBERS", "SCHEDULED"],
        f"{args.account} has no subscriptions",
    )


def _topup_table(reply: Shown, args: argparse.Namespace) -> str:
    rows = [
        [
            t.get("id", ""),
            t.get("feature", ""),
            output.number(t.get("amount", 0)),
            output.number(t.get("burned", 0)),
            output.number(t.get("remaining", 0)),
            str(t.get("priority", 0)),
            output.day(t["expires_at"]) if "expires_at" in t else "-",
            "voided" if "voided_at" in t else ("active" if t.get("active") else "inactive"),
        ]
        for t in reply.get("topups", [])
    ]
    return output.table(
        rows,
        ["ID", "FEATURE", "AMOUNT", "BURNED", "REMAINING", "PRIORITY", "EXPIRES", "STATE"],
        f"{args.account} has no top-ups",
    )


def _account_table(reply: Shown, args: argparse.Namespace) -> str:
    rows = [
        [
            a["id"],
            a.get("name", ""),
            ", ".join(s.get("plan", "") for s in a.get("subscriptions", [])) or "-",
            "catalog" if a.get("declared") else "api",
        ]
        for a in reply.get("accounts", [])
    ]
    text = output.table(rows, ["ID", "NAME", "PLANS", "FROM"], "no accounts")
    if reply.get("next_page_token"):
        text += f"\nmore: --after {reply['next_page_token']}"
    return text


def _delivery_table(reply: Shown, args: argparse.Namespace) -> str:
    rows = [
        [
            d["id"],
            d.get("kind", ""),
            d.get("status", ""),
            d.get("account_id", ""),
            f"{d.get('feature', '')} {d.get('threshold', '')}".strip(),
            str(d.get("attempts", 0)),
            d.get("last_error", ""),
        ]
        for d in reply.get("deliveries", [])
    ]
    header = ["ID", "KIND", "STATUS", "ACCOUNT", "QUOTA", "ATTEMPTS", "LAST ERROR"]
    text = output.table(rows, header, "no deliveries")
    if reply.get("next_page_token"):
        text += f"\nmore: --page-token {reply['next_page_token']}"
    return text


def _changed(entry: Shown) -> str:
    """What an audit entry changed, in one cell: the record parts, or `usage 7 -> 0`."""
    before, after = entry.get("before") or {}, entry.get("after") or {}
    if "usage" in before or "usage" in after:
        return f"usage {output.number(before.get('usage', 0))} -> {output.number(after.get('usage', 0))}"
    if "retried" in after:
        return f"retried {after['retried']}"
    if not entry.get("before"):
        return "created"
    if not entry.get("after"):
        return "deleted"
    return ", ".join(sorted({*before, *after}))


def _audit_table(reply: Shown, args: argparse.Namespace) -> str:
    rows = [
        [
            e.get("at", ""),
            e.get("actor", ""),
            e.get("action", ""),
            e.get("account_id", ""),
            e.get("target", ""),
            _changed(e),
        ]
        for e in reply.get("entries", [])
    ]
    header = ["AT", "WHO", "WHAT", "ACCOUNT", "TARGET", "CHANGED"]
    text = output.table(rows, header, "no audit entries")
    if reply.get("next_page_token"):
        text += f"\nmore: --page-token {reply['next_page_token']}"
    return text


def _reserved(reply: Shown, args: argparse.Namespace) -> str:
    word = "granted" + (", duplicate" if reply.get("duplicate") else "")
    lines = [f"{args.feature}  {word}  hold {reply.get('hold_id', '')}"]
    lines.append(f"  expires {reply.get('expires_at', '-')}")
    metering = reply.get("resolution", {}).get("metering")
    if metering:
        lines.append(f"  {output.usage_bar(metering)}")
    return "\n".join(lines)


def _ended(reply: Shown, args: argparse.Namespace) -> str:
    hold = reply.get("hold", {})
    text = f"{hold.get('hold_id', args.hold)}  {hold.get('state', '')}"
    if "settled_amount" in hold:
        text += f" {output.number(hold['settled_amount'])}  usage {output.number(reply.get('usage', 0))}"
    if reply.get("duplicate"):
        text += "  (duplicate: the first answer)"
    if reply.get("over_ceiling"):
        text += "\n  over the ceiling: recorded in full, past the limit"
    return text


def _hold_table(reply: Shown, args: argparse.Namespace) -> str:
    rows = [
        [
            h.get("hold_id", ""),
            h.get("feature", ""),
            output.number(h.get("amount", 0)),
            h.get("created_at", "-"),
            h.get("expires_at", "-"),
        ]
        for h in reply.get("holds", [])
    ]
    return output.table(
        rows,
        ["ID", "FEATURE", "AMOUNT", "CREATED", "EXPIRES"],
        f"{args.account} has no active holds",
    )


# -- what counts as a failure -----------------------------------------------------------------


def _evaluation_failed(reply: Shown, call: Call) -> str | None:
    code = reply.get("error_code")
    if not code:
        return None
    if code == "FLAG_NOT_FOUND":
        return call.unknown_feature(call.args.feature) or reply.get("error_message", code)
    return f"{reply.get('feature', call.args.feature)}: {code}: {reply.get('error_message', '')}"


def _report_failed(reply: Shown, call: Call) -> str | None:
    result = reply["results"][0]
    if result.get("status") != "rejected":
        return None
    return call.unknown_feature(call.args.feature) or f"report rejected: {result.get('message')}"


def _consume_failed(reply: Shown, call: Call) -> str | None:
    if reply.get("granted"):
        return None
    unknown = call.unknown_feature(call.args.feature)
    return unknown or f"not consumed: {reply.get('denial', 'denied')}"


def _reserve_failed(reply: Shown, call: Call) -> str | None:
    if reply.get("granted"):
        return None
    unknown = call.unknown_feature(call.args.feature)
    return unknown or f"not reserved: {reply.get('denial', 'denied')}"


def _never(reply: Shown, call: Call) -> str | None:
    return None


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    names: tuple[str, ...]
    options: dict[str, Any]


def arg(*names: str, **options: Any) -> Arg:
    return Arg(names, options)


ACCOUNT, FEATURE, SUBSCRIPTION = arg("account"), arg("feature"), arg("subscription")
HOLD = arg("hold", help="the hold id (from `holds reserve` or `holds list`)")
HOLD_ACCOUNT = arg("--account", default="", help="refuse unless the hold is this account's")
AT = arg("--at", help="now (default), period_end, or an ISO-8601 time", metavar="WHEN")
ADDON_HELP = "add-on and quantity (repeatable)"
VALUE_HELP = "as in the catalog: 25, true, unlimited, '{limit: 10, soft: true}'"


@dataclass(frozen=True)
class Command:
    words: str  # "check" or "GROUP ACTION"
    help: str
    rpc: str  # "Service.Method"
    request: Callable[[argparse.Namespace], Message]
    args: tuple[Arg, ...] = ()
    show: Callable[[Shown, argparse.Namespace], str] = _fields
    failed: Callable[[Shown, Call], str | None] = _never
    # the part of the reply a command is about (`subscriptions list`: the account's subscriptions)
    shown: Callable[[Message], Shown] = output.plain
    streams: bool = False  # a server-streaming RPC: each message is written as it arrives


GROUPS = {
    "accounts": "create, show, list and delete accounts",
    "subscriptions": "subscribe accounts to plans, change plans and add-ons, members, cancel",
    "overrides": "set or clear per-account feature overrides",
    "grants": "create or revoke promotional grants",
    "topups": "add, list and void top-ups (balances on top of the allowance)",
    "usage": "report, consume and reset usage; its history and the billing export",
    "deliveries": "list and retry quota webhooks and actions (the outbox)",
    "holds": "reserve amounts before work, then settle or release them (design §17)",
    "events": "send CloudEvents counted by the catalog's meters",
    "stripe": "the Stripe connection: initial sync from Stripe's list JSON (design §18)",
}


def _upsert(a: argparse.Namespace) -> pb.UpsertAccountRequest:
    request = pb.UpsertAccountRequest(id=a.id, clear_attributes=a.clear_attributes)
    if a.name is not None:
        request.name = a.name
    if a.attributes is not None:
        request.attributes.CopyFrom(to_struct(_mapping(a.attributes, "--attributes")))
    return request


def _topup_request(a: argparse.Namespace) -> pb.AddTopUpRequest:
    request = pb.AddTopUpRequest(
        account_id=a.account,
        feature=a.feature,
        amount=a.amount,
        effective_at=_time(a.effective_at),
        expires_at=_time(a.expires_at),
        id=a.id,
    )
    if a.priority is not None:
        request.priority = a.priority
    return request


def _report_request(a: argparse.Namespace) -> pb.ReportRequest:
    report = pb.UsageReport(
        account_id=a.account,
        feature=a.feature,
        amount=a.amount,
        unique_key=a.unique_key,
        mode=pb.USAGE_MODE_SET if a.set else pb.USAGE_MODE_UNSPECIFIED,
        idempotency_key=a.idempotency_key,
        timestamp=_time(a.at),
    )
    return pb.ReportRequest(reports=[report])


def _ingest_request(a: argparse.Namespace) -> pb.IngestRequest:
    """`events send FILE`: one CloudEvent (structured JSON) per line, blank lines skipped. A
    line that is not a JSON object, or a `time` that is no timestamp, stops the command before
    anything is sent, naming the line; everything else is the sidecar's to judge (design §16)."""
    try:
        with open(a.file, encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read {a.file}: {exc.strerror}") from exc
    events = []
    for number, line in lines:
        where = f"{a.file}:{number}"
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{where}: not JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: a line is one CloudEvent, a JSON object")
        data = raw.get("data")
        if data is not None and not isinstance(data, dict):
            raise UsageError(f"{where}: data must be a JSON object")
        text = {k: str(raw.get(k, "")) for k in ("specversion", "id", "source", "type", "subject")}
        event = pb.Event(
            specversion=text["specversion"],
            id=text["id"],
            source=text["source"],
            type=text["type"],
            subject=text["subject"],
        )
        if raw.get("time") is not None:
            event.time.CopyFrom(_time(str(raw["time"])))
        if data:
            event.data.CopyFrom(to_struct(data))
        events.append(event)
    if not events:
        raise UsageError(f"{a.file} holds no events (one CloudEvent JSON object per line)")
    a.lines = [number for number, _ in lines]
    return pb.IngestRequest(events=events)


def _ingest_table(reply: Shown, args: argparse.Namespace) -> str:
    rows = []
    for number, r in zip(args.lines, reply.get("results", []), strict=True):
        counted = ", ".join(
            f"{f['feature']}={output.number(f.get('usage', 0))}" for f in r.get("features", [])
        )
        rows.append([str(number), r.get("status", ""), counted or r.get("message", "")])
    return output.table(rows, ["LINE", "STATUS", "COUNTED / WHY"], "no events")


def _ingest_failed(reply: Shown, call: Call) -> str | None:
    results = reply.get("results", [])
    rejected = sum(r.get("status") == "REJECTED" for r in results)
    if not rejected:
        return None
    return f"{rejected} of {len(results)} events rejected:\n{_ingest_table(reply, call.args)}"


def _stripe_import_request(a: argparse.Namespace) -> pb.ImportStripeRequest:
    texts = []
    for name in a.files:
        try:
            texts.append(Path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{name}: {getattr(exc, 'strerror', None) or exc}") from None
    return pb.ImportStripeRequest(objects_json=texts, dry_run=a.dry_run)


def _stripe_import_table(reply: Shown, args: argparse.Namespace) -> str:
    results = reply.get("results", [])
    rows = [
        [
            r.get("object", ""),
            r.get("object_id", ""),
            r.get("account_id", ""),
            r.get("outcome", ""),
            r.get("message", ""),
        ]
        for r in results
    ]
    heading = "dry run: nothing was changed\n" if reply.get("dry_run") else ""
    changed = sum(r.get("outcome") == "applied" for r in results)
    verb = "would change" if reply.get("dry_run") else "changed"
    table = output.table(rows, ["OBJECT", "ID", "ACCOUNT", "OUTCOME", "WHAT / WHY"], "no objects")
    return f"{heading}{table}\n{changed} of {len(results)} objects {verb}"


def _stripe_import_failed(reply: Shown, call: Call) -> str | None:
    results = reply.get("results", [])
    errors = sum(r.get("outcome") == "error" for r in results)
    if not errors:
        return None
    return f"{errors} of {len(results)} objects failed:\n{_stripe_import_table(reply, call.args)}"


def _history_request(a: argparse.Namespace) -> pb.HistoryRequest:
    request = pb.HistoryRequest(account_id=a.account, feature=a.feature, window=a.window)
    _set_range(request, a)
    return request


def _export_request(a: argparse.Namespace) -> pb.ExportRequest:
    request = pb.ExportRequest()
    _set_range(request, a)
    return request


def _set_range(request: pb.HistoryRequest | pb.ExportRequest, a: argparse.Namespace) -> None:
    """`--from` / `--to` into the fields `from` (a Python keyword) and `to`."""
    getattr(request, "from").CopyFrom(_time(a.start))
    request.to.CopyFrom(_time(a.end))


def _history_table(reply: Shown, args: argparse.Namespace) -> str:
    rows = [
        [
            p.get("window_start", ""),
            p.get("window_end", ""),
            output.number(p.get("usage", 0)),
            output.number(p["limit"]) if "limit" in p else "unlimited",
        ]
        for p in reply.get("points", [])
    ]
    empty = f"no {args.window} windows in that range"
    return output.table(rows, ["WINDOW START", "WINDOW END", "USAGE", "LIMIT"], empty)


EXPORT_COLUMNS = (
    "account_id",
    "feature",
    "period_start",
    "period_end",
    "usage",
    "limit",
    "overage",
    "topups_burned",
)
"""The export's columns (design §6.2), in order; an unset `limit` (unlimited) or
`period_end` (a `reset: never` feature) is an empty CSV cell and absent from a JSON line."""


def _export_writer(args: argparse.Namespace) -> Callable[[Shown], None]:
    """Writes one export row to stdout as it arrives: a CSV line (after the header) or a
    JSON line (`--format jsonl`, or `--json`)."""
    if args.json or args.format == "jsonl":
        return lambda row: print(json.dumps(row, ensure_ascii=False))
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(EXPORT_COLUMNS)
    return lambda row: out.writerow([row.get(c, "") for c in EXPORT_COLUMNS])


def _member_request(a: argparse.Namespace) -> pb.MemberRequest:
    return pb.MemberRequest(
        account_id=a.account, subscription_id=a.subscription, member_id=a.member
    )


def _retry_request(a: argparse.Namespace) -> pb.RetryDeliveryRequest:
    if bool(a.id) == a.all_failed:
        raise UsageError("deliveries retry takes a delivery id or --all-failed (one of them)")
    return pb.RetryDeliveryRequest(id=a.id or "", all_failed=a.all_failed)


def _migrate_request(a: argparse.Namespace) -> pb.MigratePlanRequest:
    return pb.MigratePlanRequest(
        from_plan=a.from_plan, to_plan=a.to_plan, dry_run=a.dry_run, **_schedule(a.at)
    )


def _moves(reply: Shown, args: argparse.Namespace) -> str:
    """What changes for whom; a dry run says so first."""
    moves = reply.get("moves", [])
    head = "dry run, nothing changed: " if reply.get("dry_run") else ""
    lines = [f"{head}{len(moves)} subscription(s) on {args.from_plan}"]
    for m in moves:
        at = m.get("at", "")
        what = (
            f"skipped ({m['skipped']})"
            if m.get("skipped")
            else f"{m['from_plan']} → {m['to_plan']} at {at}"
        )
        lines.append(f"  {m['account_id']}  {m['subscription_id']}  {what}")
    return "\n".join(lines)


def _account_subscriptions(reply: Message) -> Shown:
    account = output.plain(reply)
    return {"account_id": account["id"], "subscriptions": account.get("subscriptions", [])}


COMMANDS: tuple[Command, ...] = (
    Command(
        "check",
        "evaluate one feature for one account",
        "Evaluation.Evaluate",
        lambda a: pb.EvaluateRequest(
            account_id=a.account,
            feature=a.feature,
            context=to_struct({} if a.requested is None else {"requested": a.requested}),
            explain=a.explain,
        ),
        (
            ACCOUNT,
            FEATURE,
            arg(
                "--requested", type=float, help="amount to check a metered feature for (default 1)"
            ),
            arg(
                "--explain",
                action="store_true",
                help="show the trail: override, targeting, every source and why it lost",
            ),
        ),
        show=_check,
        failed=_evaluation_failed,
    ),
    Command(
        "accounts upsert",
        "create or update an account: what you leave out keeps its value",
        "Admin.UpsertAccount",
        _upsert,
        (
            arg("id"),
            arg("--name", help="display name (left out: unchanged)"),
            arg(
                "--attributes",
                help="JSON/YAML mapping merged into the custom fields; a key set to null is "
                "removed (left out: unchanged)",
            ),
            arg("--clear-attributes", action="store_true", help="remove every attribute first"),
        ),
    ),
    Command(
        "accounts get",
        "show one account",
        "Admin.GetAccount",
        lambda a: pb.GetAccountRequest(id=a.id),
        (arg("id"),),
    ),
    Command(
        "accounts list",
        "list accounts",
        "Admin.ListAccounts",
        lambda a: pb.ListAccountsRequest(page_size=a.page_size, page_token=a.after),
        (
            arg("--page-size", type=int, default=100),
            arg("--after", default="", help="the last id of the previous page"),
        ),
        show=_account_table,
    ),
    Command(
        "accounts delete",
        "delete an account created through the API",
        "Admin.DeleteAccount",
        lambda a: pb.DeleteAccountRequest(id=a.id),
        (arg("id"),),
    ),
    Command(
        "subscriptions list",
        "list an account's subscriptions",
        "Admin.GetAccount",
        lambda a: pb.GetAccountRequest(id=a.account),
        (ACCOUNT,),
        show=_subscription_table,
        shown=_account_subscriptions,
    ),
    Command(
        "subscriptions create",
        "subscribe an account to a plan",
        "Admin.CreateSubscription",
        lambda a: pb.CreateSubscriptionRequest(
            account_id=a.account,
            plan=a.plan,
            addons=_addons(a.addon),
            members=a.member,
            id=a.id,
            starts_at=_time(a.starts_at),
            ends_at=_time(a.ends_at),
            trial_ends_at=_time(a.trial_ends_at),
            trial_then=a.trial_then,
            allow_repeat_trial=a.allow_repeat_trial,
            no_trial=a.no_trial,
        ),
        (
            ACCOUNT,
            arg("plan"),
            arg("--addon", action="append", default=[], metavar="KEY=QTY", help=ADDON_HELP),
            arg(
                "--member",
                action="append",
                default=[],
                help="account sharing this subscription (repeatable)",
            ),
            arg("--starts-at"),
            arg("--ends-at"),
            arg("--trial-ends-at", help="end the trial then instead of after the plan's days"),
            arg(
                "--trial-then",
                default="",
                help="at the trial's end: continue, cancel or a plan (default: the plan's)",
            ),
            arg(
                "--allow-repeat-trial",
                action="store_true",
                help="grant a trial although the account already had one of this plan",
            ),
            arg("--no-trial", action="store_true", help="sell the plan without its trial"),
            arg("--id", default=""),
        ),
    ),
    Command(
        "subscriptions change-plan",
        "move a subscription to another plan (now, at a time or at the period end)",
        "Admin.ChangePlan",
        lambda a: pb.ChangePlanRequest(
            account_id=a.account, subscription_id=a.subscription, plan=a.plan, **_schedule(a.at)
        ),
        (ACCOUNT, SUBSCRIPTION, arg("plan"), AT),
    ),
    Command(
        "subscriptions set-addons",
        "replace a subscription's add-ons (now, at a time or at the period end)",
        "Admin.ChangeAddOns",
        lambda a: pb.ChangeAddOnsRequest(
            account_id=a.account,
            subscription_id=a.subscription,
            addons=_addons(a.addons),
            **_schedule(a.at),
        ),
        (ACCOUNT, SUBSCRIPTION, arg("addons", nargs="*", metavar="KEY=QTY"), AT),
    ),
    Command(
        "subscriptions cancel",
        "end a subscription (now, at a time or at the period end)",
        "Admin.CancelSubscription",
        lambda a: pb.CancelSubscriptionRequest(
            account_id=a.account, subscription_id=a.subscription, **_schedule(a.at)
        ),
        (ACCOUNT, SUBSCRIPTION, AT),
    ),
    Command(
        "subscriptions cancel-scheduled",
        "remove a subscription's pending changes (all, or the one starting --at)",
        "Admin.CancelScheduledChange",
        lambda a: pb.CancelScheduledChangeRequest(
            account_id=a.account, subscription_id=a.subscription, at=_time(a.at)
        ),
        (ACCOUNT, SUBSCRIPTION, arg("--at", help="the start of the change to remove")),
    ),
    Command(
        "subscriptions resume",
        "remove a subscription's pending end",
        "Admin.ResumeSubscription",
        lambda a: pb.ResumeSubscriptionRequest(
            account_id=a.account, subscription_id=a.subscription
        ),
        (ACCOUNT, SUBSCRIPTION),
    ),
    Command(
        "migrate",
        "move every subscription on one plan to another (grandfathering ends)",
        "Admin.MigratePlan",
        _migrate_request,
        (
            arg("--from", dest="from_plan", required=True, metavar="PLAN"),
            arg("--to", dest="to_plan", required=True, metavar="PLAN"),
            AT,
            arg("--dry-run", action="store_true", help="print what would change, change nothing"),
        ),
        show=_moves,
    ),
    Command(
        "subscriptions add-member",
        "let another account share a subscription",
        "Admin.AddMember",
        _member_request,
        (ACCOUNT, SUBSCRIPTION, arg("member")),
    ),
    Command(
        "subscriptions remove-member",
        "stop sharing a subscription",
        "Admin.RemoveMember",
        _member_request,
        (ACCOUNT, SUBSCRIPTION, arg("member")),
    ),
    Command(
        "overrides set",
        "override a feature for an account",
        "Admin.SetOverride",
        lambda a: pb.SetOverrideRequest(
            account_id=a.account,
            feature=a.feature,
            value=to_value(_value(a.value)),
            expires_at=_time(a.expires_at),
        ),
        (ACCOUNT, FEATURE, arg("value", help=VALUE_HELP), arg("--expires-at")),
    ),
    Command(
        "overrides clear",
        "remove an override",
        "Admin.ClearOverride",
        lambda a: pb.ClearOverrideRequest(account_id=a.account, feature=a.feature),
        (ACCOUNT, FEATURE),
    ),
    Command(
        "grants create",
        "grant a feature value for a time",
        "Admin.CreateGrant",
        lambda a: pb.CreateGrantRequest(
            account_id=a.account,
            feature=a.feature,
            value=to_value(_value(a.value)),
            id=a.id,
            starts_at=_time(a.starts_at),
            ends_at=_time(a.ends_at),
        ),
        (
            ACCOUNT,
            FEATURE,
            arg("value", help=VALUE_HELP),
            arg("--starts-at"),
            arg("--ends-at"),
            arg("--id", default=""),
        ),
    ),
    Command(
        "grants revoke",
        "revoke a grant",
        "Admin.RevokeGrant",
        lambda a: pb.RevokeGrantRequest(account_id=a.account, grant_id=a.grant),
        (ACCOUNT, arg("grant")),
    ),
    Command(
        "topups add",
        "add a balance on a sum metered or credits feature",
        "Admin.AddTopUp",
        _topup_request,
        (
            ACCOUNT,
            FEATURE,
            arg("amount", type=float),
            arg("--priority", type=int, help="lower burns first (default 10)"),
            arg("--effective-at", help="default now"),
            arg("--expires-at", help="default never"),
            arg("--id", default=""),
        ),
    ),
    Command(
        "topups list",
        "list an account's top-ups in burn order, with what each burned",
        "Admin.ListTopUps",
        lambda a: pb.ListTopUpsRequest(account_id=a.account, feature=a.feature),
        (ACCOUNT, arg("--feature", default="")),
        show=_topup_table,
    ),
    Command(
        "topups void",
        "end a top-up's remainder now (what it burned stays burned)",
        "Admin.VoidTopUp",
        lambda a: pb.VoidTopUpRequest(account_id=a.account, topup_id=a.topup),
        (ACCOUNT, arg("topup")),
    ),
    Command(
        "usage report",
        "report usage of a metered feature",
        "Usage.Report",
        _report_request,
        (
            ACCOUNT,
            FEATURE,
            arg("amount", type=float, nargs="?", default=1.0),
            arg("--set", action="store_true", help="set the counter instead of adding"),
            arg("--unique-key", default=""),
            arg("--idempotency-key", default=""),
            arg("--at", help="when it happened (default now)"),
        ),
        show=_report,
        failed=_report_failed,
    ),
    Command(
        "usage consume",
        "check and record in one step",
        "Usage.Consume",
        lambda a: pb.ConsumeRequest(
            account_id=a.account,
            feature=a.feature,
            amount=a.amount,
            idempotency_key=a.idempotency_key,
        ),
        (
            ACCOUNT,
            FEATURE,
            arg("amount", type=float, nargs="?", default=1.0),
            arg("--idempotency-key", default=""),
        ),
        show=_consume,
        failed=_consume_failed,
    ),
    Command(
        "usage reset",
        "start a fresh period for an account's feature",
        "Admin.ResetUsage",
        lambda a: pb.ResetUsageRequest(account_id=a.account, feature=a.feature),
        (ACCOUNT, FEATURE),
    ),
    Command(
        "usage history",
        "an account's usage of a feature, window by window, with the limit in force",
        "Usage.History",
        _history_request,
        (
            ACCOUNT,
            FEATURE,
            arg("--from", dest="start", required=True, metavar="TIME", help="ISO-8601 time"),
            arg("--to", dest="end", required=True, metavar="TIME", help="ISO-8601 time"),
            arg("--window", choices=["hour", "day", "period"], default="hour"),
        ),
        show=_history_table,
    ),
    Command(
        "usage export",
        "every counter overlapping a range, one row per account, feature and period",
        "Usage.Export",
        _export_request,
        (
            arg("--from", dest="start", required=True, metavar="TIME", help="ISO-8601 time"),
            arg("--to", dest="end", required=True, metavar="TIME", help="ISO-8601 time"),
            arg("--format", choices=["csv", "jsonl"], default="csv"),
        ),
        streams=True,
    ),
    Command(
        "holds reserve",
        "reserve an amount of a sum metered feature or credit pool until settled or released",
        "Usage.Reserve",
        lambda a: pb.ReserveRequest(
            account_id=a.account,
            feature=a.feature,
            amount=a.amount,
            ttl_seconds=a.ttl,
            idempotency_key=a.idempotency_key,
        ),
        (
            ACCOUNT,
            FEATURE,
            arg("amount", type=float),
            arg("--ttl", type=int, metavar="SECONDS", help="1..86400 (default 300)"),
            arg("--idempotency-key", default=""),
        ),
        show=_reserved,
        failed=_reserve_failed,
    ),
    Command(
        "holds settle",
        "record the real amount as usage (in full, even past the limit) and end the hold",
        "Usage.Settle",
        lambda a: pb.SettleRequest(
            hold_id=a.hold,
            amount=a.amount,
            account_id=a.account,
            idempotency_key=a.idempotency_key,
        ),
        (HOLD, arg("amount", type=float), HOLD_ACCOUNT, arg("--idempotency-key", default="")),
        show=_ended,
    ),
    Command(
        "holds release",
        "end a hold without recording usage",
        "Usage.Release",
        lambda a: pb.ReleaseRequest(
            hold_id=a.hold, account_id=a.account, idempotency_key=a.idempotency_key
        ),
        (HOLD, HOLD_ACCOUNT, arg("--idempotency-key", default="")),
        show=_ended,
    ),
    Command(
        "holds list",
        "list an account's active holds, earliest expiry first",
        "Usage.ListHolds",
        lambda a: pb.ListHoldsRequest(account_id=a.account, feature=a.feature),
        (ACCOUNT, arg("--feature", default="")),
        show=_hold_table,
    ),
    Command(
        "deliveries list",
        "list deliveries, newest first",
        "Admin.ListDeliveries",
        lambda a: pb.ListDeliveriesRequest(
            status=a.status or "", page_size=a.page_size, page_token=a.page_token
        ),
        (
            arg("--status", choices=["pending", "failed", "delivered"]),
            arg("--page-size", type=int, default=100),
            arg("--page-token", default="", help="next_page_token of the previous page"),
        ),
        show=_delivery_table,
    ),
    Command(
        "deliveries retry",
        "make a failed (or pending) delivery due now",
        "Admin.RetryDelivery",
        _retry_request,
        (
            arg("id", nargs="?", help="the delivery id (from `deliveries list`)"),
            arg("--all-failed", action="store_true", help="retry every failed delivery"),
        ),
    ),
    Command(
        "audit",
        "list admin changes, newest first: who, what, before and after (design §12)",
        "Admin.ListAuditLog",
        lambda a: pb.ListAuditLogRequest(
            account_id=a.account or "",
            since=_time(a.since),
            page_size=a.page_size,
            page_token=a.page_token,
        ),
        (
            arg("--account", help="only this account's changes"),
            arg("--since", help="only changes at or after this time (ISO-8601)"),
            arg("--page-size", type=int, default=100),
            arg("--page-token", default="", help="next_page_token of the previous page"),
        ),
        show=_audit_table,
    ),
    Command(
        "events send",
        "send CloudEvents (one JSON object per line); exits 1 when any is rejected",
        "Usage.Ingest",
        _ingest_request,
        (arg("file", help="a .jsonl file of CloudEvents"),),
        show=_ingest_table,
        failed=_ingest_failed,
    ),
    Command(
        "stripe import",
        "apply Stripe's list JSON (customers, subscriptions) as its webhooks would; exits 1 "
        "when any object fails",
        "Admin.ImportStripe",
        _stripe_import_request,
        (
            arg(
                "files",
                nargs="+",
                metavar="FILE",
                help="what `stripe customers list` / `stripe subscriptions list` print",
            ),
            arg("--dry-run", action="store_true", help="print what would change; change nothing"),
        ),
        show=_stripe_import_table,
        failed=_stripe_import_failed,
    ),
)


# -- running a command -------------------------------------------------------------------------


def run(command: Command, args: argparse.Namespace) -> int:
    """One RPC, its reply printed (JSON or text), and the exit code of EXIT_CODES."""
    try:
        request = command.request(args)
    except UsageError as exc:
        print(f"plangate: {exc}", file=sys.stderr)
        return USAGE
    if command.streams:
        return _run_stream(command, args, request)
    with channel(args) as ch:
        call = Call(args, ch)
        try:
            reply = call.rpc(command.rpc, request)
        except grpc.RpcError as exc:
            return _refused(exc, args)
        shown = command.shown(reply)
        failure = command.failed(shown, call)
    if args.json:
        print(output.dumps(shown))  # scripts get the reply even when it is a failure
    elif not failure:
        print(command.show(shown, args))
    if failure:
        print(f"plangate: {failure}", file=sys.stderr)
        return FAILED
    return OK


def _run_stream(command: Command, args: argparse.Namespace, request: Message) -> int:
    """A streaming RPC: each message written as it arrives, so memory stays flat however
    long the stream. An error mid-stream exits non-zero after the rows already written.
    No deadline: an export of millions of rows takes as long as it takes."""
    write = _export_writer(args)
    with channel(args) as ch:
        call = Call(args, ch)
        service, method = command.rpc.split(".")
        stream = getattr(call.stub(service), method)(request, metadata=call.metadata)
        try:
            for message in stream:
                write(command.shown(message))
        except grpc.RpcError as exc:
            sys.stdout.flush()
            return _refused(exc, args)
    return OK


def _refused(exc: grpc.RpcError, args: argparse.Namespace) -> int:
    """A failed call said for people: an unreachable sidecar or a missing token as what to
    do about it, anything else as the sidecar's status and message."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    if code in UNREACHABLE:
        print(
            f"plangate: cannot reach a sidecar at {args.target} ({code.name}): is "
            "`plangate serve` running there? Set --target or PLANGATE_TARGET to its gRPC address.",
            file=sys.stderr,
        )
        return USAGE
    print(f"plangate: {code.name}: {details}", file=sys.stderr)
    if code == grpc.StatusCode.UNAUTHENTICATED and not os.environ.get("PLANGATE_TOKEN"):
        print(
            "plangate: this sidecar asks for a token: set PLANGATE_TOKEN to one of its "
            "--token-file tokens",
            file=sys.stderr,
        )
    return FAILED


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
    common.add_argument(
        "--json", action="store_true", help="print the reply as JSON for scripts (see `--help`)"
    )
    groups: dict[str, Sub] = {}
    for command in COMMANDS:
        *group, name = command.words.split()
        into = sub
        if group:
            if group[0] not in groups:
                g = sub.add_parser(group[0], help=GROUPS[group[0]], description=GROUPS[group[0]])
                groups[group[0]] = g.add_subparsers(dest="action", required=True, metavar="ACTION")
            into = groups[group[0]]
        p = into.add_parser(
            name,
            parents=[common],
            help=command.help,
            description=command.help,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for a in command.args:
            p.add_argument(*a.names, **a.options)
        p.set_defaults(func=lambda args, c=command: run(c, args))
