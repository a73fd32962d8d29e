"""What an audit entry holds of a change (design §12, `runtime.audit`): the top-level parts of
the record that differ, the whole record on creation or deletion, each side bounded."""

from __future__ import annotations

from datetime import UTC, datetime

from plangate.sidecar.runtime.edits.audit import MAX_PART, record_entry
from plangate.sidecar.runtime.edits.records import new_record

AT = datetime(2026, 6, 1, tzinfo=UTC)


def test_an_edit_keeps_only_the_parts_that_changed() -> None:
    before = new_record("a1", "Acme", {"region": "eu"})
    after = {**before, "name": "Acme Inc", "overrides": {"seats": {"value": 3}}, "topups": []}
    entry = record_entry(AT, "alice", "SetOverride", before, after, "seats")
    assert (entry.at, entry.actor, entry.action, entry.account, entry.target) == (
        AT,
        "alice",
        "SetOverride",
        "a1",
        "seats",
    )
    assert entry.before == {"name": "Acme", "overrides": {}}
    assert entry.after == {"name": "Acme Inc", "overrides": {"seats": {"value": 3}}, "topups": []}


def test_creation_and_deletion_keep_the_whole_record() -> None:
    record = new_record("a1", "Acme")
    created = record_entry(AT, "alice", "UpsertAccount", None, record)
    deleted = record_entry(AT, "alice", "DeleteAccount", record, None)
    assert (created.before, created.after) == (None, record)
    assert (deleted.before, deleted.after, deleted.account) == (record, None, "a1")


def test_a_side_over_the_bound_is_replaced_by_a_note_of_its_size() -> None:
    before = new_record("a1")
    after = {**before, "attributes": {"notes": "x" * MAX_PART}, "name": "short"}
    entry = record_entry(AT, "alice", "UpsertAccount", before, after)
    assert entry.before == {"attributes": {}, "name": ""}  # the small side is kept as it is
    assert entry.after is not None and entry.after["truncated"] is True
    assert entry.after["keys"] == ["attributes", "name"]
    assert entry.after["size"] > MAX_PART
    fits = {**before, "attributes": {"notes": "x" * (MAX_PART - 40)}}
    assert record_entry(AT, "alice", "UpsertAccount", before, fits).after == {
        "attributes": fits["attributes"]
    }


def test_a_part_the_edit_removed_shows_on_the_before_side_only() -> None:
    before = {**new_record("a1"), "quota_layer": {"overrides": {"seats": 3}}}
    entry = record_entry(AT, "quota", "ClearOverride", before, new_record("a1"))
    assert (entry.before, entry.after) == ({"quota_layer": {"overrides": {"seats": 3}}}, {})
