"""The CloudEvent a `track` call becomes when its name is not a feature key (design §16).

`type` is the tracking event name, `subject` the targeting key, `source` the provider's
configured one, `data` the tracking details' attributes plus `value`. The `id` is made once,
at `track`, and travels with the queued event (and its journal line), so a retry or a replay
after a crash carries the same `(source, id)` and the sidecar answers "duplicate".
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from typing import Any

from plangate.protocol.plangate.v1 import plangate_pb2 as pb

_LOW = (1 << 48) - 1  # the bits a session's event number fills


class EventIds:
    """UUIDs for one session: 80 random bits drawn once, the event number in the low 48.

    Unique within the session and, with overwhelming odds, across sessions, without a
    `getrandom` system call per `track` (the same reasoning as report keys, decision 2104).
    """

    def __init__(self) -> None:
        self._base = secrets.randbits(128) & ~_LOW

    def __call__(self, seq: int) -> str:
        return str(uuid.UUID(int=self._base | (seq & _LOW), version=4))


def tracking_event(
    name: str,
    account: str,
    value: float | None,
    attributes: Mapping[str, Any],
    source: str,
    event_id: str,
) -> pb.Event:
    """The `Usage.Ingest` event for one `track` call.

    Raises ValueError (or TypeError) for attributes that are not JSON values, so `track`
    can warn and drop the event instead of queueing one the sidecar could never read.
    """
    event = pb.Event(specversion="1.0", id=event_id, source=source, type=name, subject=account)
    fields = dict(attributes)
    if value is not None:
        fields["value"] = value
    event.data.update(fields)
    return event
