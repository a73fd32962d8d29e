"""`EvaluateAll` responses assembled from cached, already-encoded resolutions.

Converting 50 decisions into `Resolution` messages (every typed field, the object detail,
the metadata Struct) and copying each into the response map cost ~20 times the evaluation
itself. Yet most of those decisions repeat exactly: every account on a plan gets the same
decision for its non-metered features, and a metered one changes only when its usage or its
period does. A `Resolution` is a pure function of (decision, feature), so this keeps the
encoded map entry of each (catalog version, decision) and builds a response by joining the
entries' bytes and parsing them once (concatenated protobuf messages merge; each entry is
one map item).

Nothing can come out stale: the key is the whole decision — value, access, denial, usage
counters, period, `valid_until` — so a decision that differs in anything encodes anew. Equal
but differently rendered values are kept apart: the key carries the value's type (`1` and
`True` are equal in Python) and the time zones of the instants (rendered in ISO text);
other values (objects, lists of anything but strings) are converted each time rather than
trusted to Python's equality. The cache is dropped on a catalog change and when it reaches `max_entries`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import fields

from ...protocol.plangate.v1 import plangate_pb2 as pb
from ..engine import Decision, EvaluationError, Kind
from ..runtime.serve.decisions import Evaluated
from .convert import error_resolution, resolution

_SCALARS = (type(None), bool, int, float, str)
_FIELDS = tuple(f.name for f in fields(Decision) if f.compare)  # as Decision compares


def _key(key: str, decision: Decision) -> Hashable | None:
    """The cache key of feature `key`'s `decision`, None when it must not be cached."""
    value = decision.value
    kind = type(value)
    found: Hashable = decision
    if (kind is list or kind is tuple) and all(type(item) is str for item in value):
        # a list feature: every field, the list as a tuple (hashable, the same text)
        found = tuple(tuple(value) if f == "value" else getattr(decision, f) for f in _FIELDS)
    elif kind not in _SCALARS:
        return None
    m, until = decision.metering, decision.valid_until
    if m is None and until is None:
        return key, found, kind
    zones = (
        until and until.tzinfo,
        m and m.period_start.tzinfo,
        m and m.period_end and m.period_end.tzinfo,
    )
    return key, found, kind, zones


class ResolutionCache:
    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._version = ""
        self._entries: dict[Hashable, bytes] = {}
        self._singles: dict[Hashable, bytes] = {}  # `Evaluate`'s, keyed with the kind asked

    def _for_version(self, catalog_version: str) -> None:
        """Start afresh on another catalog (a feature's rendering may have changed) or when
        full; a caller reads the version BEFORE evaluating, so an entry built from a newer
        catalog than its label is dropped as soon as the next call sees that newer version."""
        if catalog_version != self._version or (
            len(self._entries) + len(self._singles) >= self.max_entries
        ):
            self._entries, self._singles = {}, {}
            self._version = catalog_version

    def encoded_one(
        self, catalog_version: str, found: Evaluated, kind: Kind | None, context_dependent: bool
    ) -> bytes:
        """`Evaluate`'s encoded `Resolution` (only `kind` typed, as `resolution` does): the
        conversion and its encoding were a third of the RPC's Python time, and repeat
        exactly for every account with the same decision. Raises what `resolution` raises."""
        decision, feature = found.decision, found.feature
        cache_key = _key(decision.feature, decision)
        if cache_key is None or context_dependent:
            res = resolution(decision, feature, kind)
            res.context_dependent = res.context_dependent or context_dependent
            return res.SerializeToString()
        self._for_version(catalog_version)
        full = (cache_key, kind)
        found_bytes = self._singles.get(full)
        if found_bytes is None:
            found_bytes = resolution(decision, feature, kind).SerializeToString()
            self._singles[full] = found_bytes
        return found_bytes

    def encoded(
        self,
        account_id: str,
        catalog_version: str,
        results: Mapping[str, Evaluated | EvaluationError],
    ) -> bytes:
        """The encoded `EvaluateAllResponse` of `results` (feature key → decision or error),
        sent as it is (the server's serializer passes bytes through): parsing the joined
        entries into a message only for gRPC to encode it again cost a fifth of the call."""
        self._for_version(catalog_version)
        entries = self._entries
        parts: list[bytes] = []
        for key, result in results.items():
            if isinstance(result, EvaluationError):
                parts.append(_entry(key, error_resolution(key, result)))
                continue
            decision, feature = result.decision, result.feature
            cache_key = _key(key, decision)
            if cache_key is None:
                parts.append(_entry(key, resolution(decision, feature)))
                continue
            found = entries.get(cache_key)
            if found is None:
                found = entries[cache_key] = _entry(key, resolution(decision, feature))
            parts.append(found)
        head = pb.EvaluateAllResponse(account_id=account_id, catalog_version=catalog_version)
        parts.append(head.SerializeToString())  # fields may come in any order on the wire
        return b"".join(parts)


def _entry(key: str, res: pb.Resolution) -> bytes:
    """The encoded `resolutions` map item of one feature."""
    one = pb.EvaluateAllResponse()
    one.resolutions[key].CopyFrom(res)
    return one.SerializeToString()
