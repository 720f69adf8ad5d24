from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from dispatchd.models import Record, level_name, parse_level

from .support.records import record


@pytest.mark.parametrize(
    ("given", "expected"),
    [(10, 10), (20, 20), (25, 25), (50, 50), ("DEBUG", 10), ("info", 20), ("Warn", 30),
     ("WARNING", 30), ("error", 40), (" CRITICAL ", 50)],
)
def test_level_accepts_integers_and_names(given, expected):
    assert Record.model_validate(record(level=given)).level == expected


@pytest.mark.parametrize("bad", [True, False, 20.0, 9, 51, 0, -20, "LOUD", "", None, [20], {"v": 20}])
def test_level_rejects_everything_else(bad):
    with pytest.raises(ValidationError) as info:
        Record.model_validate(record(level=bad))
    assert info.value.errors()[0]["loc"] == ("level",)


def test_level_names():
    assert [level_name(n) for n in (10, 20, 25, 30, 40, 50)] == [
        "DEBUG", "INFO", "INFO", "WARNING", "ERROR", "CRITICAL"
    ]
    assert parse_level("warn") == 30


def test_id_and_timestamp_are_generated_when_absent():
    before = datetime.now(UTC)
    r = Record.model_validate(record())
    assert uuid.UUID(r.id).version == 4
    assert before <= r.timestamp <= datetime.now(UTC)


def test_given_id_is_kept_in_canonical_form():
    given = "4F0C9A52-0000-4000-8000-00000000ABCD"
    assert Record.model_validate(record(id=given)).id == given.lower()
    with pytest.raises(ValidationError):
        Record.model_validate(record(id="not-a-uuid"))


def test_timestamp_must_carry_an_offset():
    r = Record.model_validate(record(timestamp="2026-11-28T06:00:00+02:00"))
    assert r.timestamp.astimezone(UTC).hour == 4
    with pytest.raises(ValidationError):
        Record.model_validate(record(timestamp="2026-11-28T06:00:00"))


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"action": {}}, ("action", "action")),
        ({"action": None}, ("action",)),
        ({"extra": [1, 2]}, ("extra",)),
        ({"levle": "INFO"}, ("levle",)),
        ({"phase": "x" * 256}, ("phase",)),
    ],
)
def test_invalid_records_name_the_field(change, loc):
    with pytest.raises(ValidationError) as info:
        Record.model_validate(record(**change))
    assert info.value.errors()[0]["loc"] == loc


def test_missing_action_is_rejected():
    body = record()
    del body["action"]
    with pytest.raises(ValidationError):
        Record.model_validate(body)


# Senlin's own database-dispatcher cases (senlin/tests/unit/events/test_database.py).


def test_cluster_event_uses_its_own_id_as_cluster_id():
    d = Record.model_validate(record()).derived()
    assert (d.oid, d.oname, d.otype, d.cluster_id) == ("c-1", "web", "CLUSTER", "c-1")
    assert (d.user, d.project, d.action) == ("user-1", "project-1", "CLUSTER_SCALE_OUT")


def test_node_event_uses_the_entity_cluster_id():
    body = record()
    body["action"] = {**body["action"], "action": "NODE_CREATE",
                      "entity": {"type": "node", "id": "n-1", "name": "n", "cluster_id": "c-9"}}
    d = Record.model_validate(body).derived()
    assert (d.oid, d.otype, d.cluster_id, d.action) == ("n-1", "NODE", "c-9", "NODE_CREATE")


@pytest.mark.parametrize("name", ["CLUSTER_OPERATION", "NODE_OPERATION"])
def test_operation_actions_take_the_operation_input(name):
    body = record()
    body["action"] = {**body["action"], "action": name, "inputs": {"operation": "reboot"}}
    assert Record.model_validate(body).derived().action == "reboot"
    body["action"]["inputs"] = {}
    assert Record.model_validate(body).derived().action == name


def test_status_and_reason_fall_back_to_the_entity():
    body = record(phase=None, reason=None)
    body["action"]["entity"] = {**body["action"]["entity"], "status": "WARNING",
                                "status_reason": "one node down"}
    d = Record.model_validate(body).derived()
    assert (d.status, d.status_reason) == ("WARNING", "one node down")
    d = Record.model_validate(record(phase="start", reason="going")).derived()
    assert (d.status, d.status_reason) == ("start", "going")


def test_extra_becomes_meta_data():
    assert Record.model_validate(record(extra={"k": [1]})).derived().meta_data == {"k": [1]}
    assert Record.model_validate(record(extra=None)).derived().meta_data == {}


def test_dump_kwargs_are_senlins():
    r = Record.model_validate(record())
    assert set(r.dump_kwargs()) == {"timestamp", "phase", "reason", "extra", "id", "context"}


def test_generated_ids_are_uuid4_with_distinct_short_ids():
    ids = [Record.model_validate({"level": 20, "action": {"action": "X"}}).id for _ in range(1000)]
    assert all(uuid.UUID(i).version == 4 for i in ids)
    # Senlin's short-id lookup matches on a prefix: events made together must not share theirs.
    assert len({i[:8] for i in ids}) == 1000


def test_senlin_attributes_of_cluster_node_action_and_context_are_accepted():
    r = Record.model_validate(record(
        action={"action": "CLUSTER_SCALE_OUT", "created_at": "2026-12-01T06:00:00Z",
                "start_time": 1.5, "end_time": None, "timeout": 3600,
                "entity": {"type": "CLUSTER", "id": "c1", "profile_id": "p1", "min_size": 0,
                           "max_size": -1, "desired_capacity": 2, "timeout": 3600,
                           "init_at": "2026-12-01T05:00:00Z", "metadata": {"k": "v"},
                           "dependents": {}, "domain": None}},
        context={"user_id": "u9", "project_id": "p9", "roles": ["admin"], "is_admin": True,
                 "request_id": "req-1"},
    ))
    assert r.action.entity is not None and r.action.entity.desired_capacity == 2
    assert r.action.start_time == 1.5
    # Senlin's database dispatcher reads user and project from the request context.
    assert (r.derived().user, r.derived().project) == ("u9", "p9")


@pytest.mark.parametrize(("entity", "wrong"), [
    ({"type": "NODE", "min_size": 1}, "min_size"),
    ({"type": "CLUSTER", "physical_id": "x"}, "physical_id"),
])
def test_attributes_of_the_other_kind_of_entity_are_rejected(entity, wrong):
    with pytest.raises(ValidationError, match=wrong):
        Record.model_validate(record(action={"action": "X", "entity": entity}))


@pytest.mark.parametrize("secret", ["auth_token", "password", "auth_token_info", "nope"])
def test_context_rejects_credentials_and_unknown_keys(secret):
    with pytest.raises(ValidationError, match=secret):
        Record.model_validate(record(context={secret: "x"}))
