"""`catalog.frozen.quick_init` builds the same objects as the dataclass `__init__` it replaces,
and the stored-record decoder reads what `json.dumps` writes, orjson or not."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from plangate.sidecar.catalog.frozen import quick_init
from plangate.sidecar.catalog.model import Account, Subscription
from plangate.sidecar.store.base import PackedRecords

EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Plain:
    a: str
    b: int = 3
    c: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    d: tuple[str, ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class Quick:
    a: str
    b: int = 3
    c: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    d: tuple[str, ...] = ()


def test_same_values_defaults_and_factories() -> None:
    for args, kwargs in [(("x",), {}), (("x", 5), {"d": ("m",)}), ((), {"a": "y", "c": {"k": 1}})]:
        plain, quick = Plain(*args, **kwargs), Quick(*args, **kwargs)  # type: ignore[arg-type]
        names = [f.name for f in dataclasses.fields(Plain)]
        assert [getattr(quick, n) for n in names] == [getattr(plain, n) for n in names]
    assert Quick("x").c is EMPTY  # the factory ran


def test_same_signature_and_still_frozen() -> None:
    def shape(cls: type) -> list[tuple[str, object, bool]]:
        params = inspect.signature(cls).parameters.values()
        return [(p.name, p.kind, p.default is p.empty) for p in params]

    assert shape(Quick) == shape(Plain)
    q = Quick("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.a = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Quick()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick("x", e=1)  # type: ignore[call-arg]
    assert Quick("x") == Quick("x") != Quick("y")


def test_the_model_classes_match_their_fields() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sub = Subscription("s1", "a1", "pro", starts_at=now, members=("m",))
    values = {f.name: getattr(sub, f.name) for f in dataclasses.fields(Subscription)}
    assert values == {
        "id": "s1",
        "owner": "a1",
        "plan": "pro",
        "addons": {},
        "starts_at": now,
        "ends_at": None,
        "trial_ends_at": None,
        "members": ("m",),
        "phases": (),
    }
    account = Account("a1", subscriptions=(sub,))
    assert dataclasses.replace(account, name="A").name == "A"
    assert account.subscriptions == (sub,) and account.declared is False


def test_quick_init_refuses_what_it_cannot_copy() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises(TypeError, match="slotted"):
        quick_init(NoSlots)


def test_stored_records_decode_like_json_loads() -> None:
    records = {
        "a": {"id": "a", "attributes": {"n": 1.5, "big": 2**70, "s": "é\u2028"}},
        "b": {"id": "b", "attributes": {"nan": math.nan}},  # json.dumps writes NaN
    }
    packed = PackedRecords(records)
    decoded = dict(packed.decoded())
    assert decoded["a"] == records["a"] and packed["a"] == records["a"]
    assert math.isnan(decoded["b"]["attributes"]["nan"])
    broken = PackedRecords.of_texts([("c", '{"id": "c"')])
    with pytest.raises(json.JSONDecodeError):
        dict(broken.decoded())
