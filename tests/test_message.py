"""The ``message`` dispatcher against the real RabbitMQ on this machine (never mocked)."""

from __future__ import annotations

import json
import re
import socket
import ssl
import tempfile
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from pydantic import ValidationError

from dispatchd import Unavailable, config, registry
from dispatchd.dispatchers import notifications
from dispatchd.dispatchers.message import MessageDispatcher, MessageOptions
from dispatchd.models import Record

from .support.amqp import RABBIT_URL, TcpProxy, bound_queue, require_service
from .support.records import record
from .support.vhost import fresh_vhost_async


def make(exchange: str, **options) -> MessageDispatcher:
    return MessageDispatcher("message", MessageOptions(exchange=exchange, **options))


def node_record(**overrides) -> Record:
    body = record(**overrides)
    body["action"] = {**body["action"], "action": "NODE_OPERATION", "inputs": {"operation": "reboot"},
                      "entity": {"type": "NODE", "id": "n-1", "name": "n1", "cluster_id": "c-1"}}
    return Record.model_validate(body)


# -- options and formats -------------------------------------------------------------------------


def test_defaults_follow_the_format():
    json_opts, senlin_opts = MessageOptions(), MessageOptions(format="senlin")
    assert (json_opts.exchange, json_opts.routing_key) == ("dispatchd", "{event_type}")
    assert (json_opts.durable, json_opts.default_queue) == (True, False)
    # A default oslo.messaging deployment of Senlin: non-durable exchange, a queue per key.
    assert (senlin_opts.exchange, senlin_opts.routing_key) == (
        "senlin", "versioned_notifications.{priority}"
    )
    assert (senlin_opts.durable, senlin_opts.default_queue) == (False, True)
    assert senlin_opts.publisher_id == f"senlin-engine:{socket.gethostname()}"
    batch = MessageOptions(format="batch")
    assert (batch.durable, batch.default_queue) == (True, False)
    assert MessageOptions(format="senlin", exchange="x").exchange == "x"
    assert MessageOptions(format="senlin", durable=True, default_queue=False).durable is True
    assert MessageOptions(durable=False, default_queue=True).default_queue is True


@pytest.mark.parametrize(
    "bad",
    [{"url": "http://host/"}, {"url": "amqp://"}, {"routing_key": "{nope}"},
     {"routing_key": "{event_type"}, {"format": "xml"}, {"confirm_timeout": 0}, {"colour": 1}],
)
def test_bad_options_are_rejected(bad):
    with pytest.raises(ValidationError):
        MessageOptions(**bad)


def test_batch_defaults():
    opts = MessageOptions(format="batch")
    assert (opts.exchange, opts.routing_key) == ("dispatchd", "batch")
    assert (opts.batch_max, opts.batch_max_bytes) == (100, 1024 * 1024)


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('format = "batch"\nrouting_key = "{event_type}"',
         r"routing_key: .*\['event_type'\] are per event.* takes a fixed routing_key"),
        ('format = "batch"\nrouting_key = "batch.{priority}.{otype}"',
         r"routing_key: .*\['otype', 'priority'\] are per event"),
        ('format = "batch"\nbatch_max = 0', r"batch_max: Input should be greater than 0"),
        ('format = "batch"\nbatch_max = "many"', r"batch_max: Input should be a valid integer"),
        ('format = "batch"\nbatch_max_bytes = -1', r"batch_max_bytes: Input should be greater"),
        ("batch_max = 50", r'batch_max: Value error, batch_max applies only to format = "batch"'),
        ('format = "senlin"\nbatch_max_bytes = 4096', r"batch_max_bytes: .*only to format"),
    ],
)
def test_bad_batch_combinations_fail_config_validation(table, error):
    cfg = config.parse(f'[dispatch]\nenabled = ["message"]\n[dispatchers.message]\n{table}\n')
    [problem] = registry.check(cfg)
    assert problem.loc[:2] == ("dispatchers", "message")
    assert re.search(error, str(problem)), problem


def test_a_batch_routing_key_is_fixed_text():
    opts = MessageOptions(format="batch", routing_key="events.{{all}}", batch_max=7)
    assert MessageDispatcher("m", opts).messages([Record.model_validate(record())])[0].key == (
        "events.{all}"
    )


def test_password_never_shown():
    assert MessageOptions(url="amqp://u:s3cret@h:5672/v").safe_url == "amqp://u@h:5672/v"


def test_event_types_are_senlins():
    r = Record.model_validate(record())
    assert notifications.event_type(r, r.derived()) == "cluster.scale_out.end"
    assert notifications.senlin_event_type(r) == "cluster.scale_out.end"
    n = node_record(phase=None)
    assert notifications.event_type(n, n.derived()) == "node.reboot"
    # Senlin's EventType renders a phase it was not given as None: so does the senlin format.
    assert notifications.senlin_event_type(n) == "node.reboot.None"
    bare = Record.model_validate(record(action={"action": "NODE_CREATE"}, phase="start"))
    assert notifications.senlin_event_type(bare) == "node.create.start"  # no entity: by the name


@pytest.mark.parametrize(
    ("level", "oslo", "json_priority"),
    [(10, "DEBUG", "DEBUG"), (20, "INFO", "INFO"), (30, "WARN", "WARNING"), (40, "ERROR", "ERROR"),
     (50, "CRITICAL", "CRITICAL"), (25, "INFO", "INFO"), (39, "WARN", "WARNING"),
     (49, "ERROR", "ERROR"), (11, "DEBUG", "DEBUG")],
)
def test_priorities_and_the_priority_template_field_per_format(level, oslo, json_priority):
    r = Record.model_validate(record(level=level))
    message = make("x", format="senlin").message(r)
    key = message.key
    assert key == f"versioned_notifications.{oslo.lower()}"  # what oslo's listener binds
    assert json.loads(json.loads(message.body)["oslo.message"])["priority"] == oslo
    assert message.properties.headers == {"level": level, "priority": oslo}
    message = make("x", routing_key="{priority}").message(r)
    key = message.key
    assert key == json_priority.lower()
    assert json.loads(message.body)["priority"] == json_priority


def test_message_properties_and_json_body():
    r = Record.model_validate(record(level="ERROR", timestamp="2026-11-28T06:00:00Z"))
    message = make("x", routing_key="{otype}.{priority}.{event_type}").message(r)
    key = message.key
    assert key == "cluster.error.cluster.scale_out.end"
    assert message.properties.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    props = message.properties
    assert (props.content_type, props.message_id, props.message_type) == (
        "application/json", r.id, "cluster.scale_out.end"
    )
    assert message.properties.timestamp == datetime(2026, 11, 28, 6, tzinfo=UTC)
    assert message.properties.headers == {"level": 40, "priority": "ERROR"}
    body = json.loads(message.body)
    assert body["id"] == r.id and body["action"]["entity"]["name"] == "web"
    assert body["derived"]["cluster_id"] == "c-1" and body["derived"]["meta_data"] == {"count": 2}
    assert (body["event_type"], body["priority"]) == ("cluster.scale_out.end", "ERROR")
    assert body["timestamp"] == "2026-11-28T06:00:00Z"


def test_json_body_is_the_record_as_posted_in_utf8():
    r = Record.model_validate(record(reason="scaled out ☕ café", extra={"nested": [1, None]}))
    message = make("x").message(r)
    assert "café".encode() in message.body  # UTF-8 as declared, not \u escapes
    body = json.loads(message.body)
    assert {k: body[k] for k in ("id", "level", "phase", "reason", "extra", "action")} == \
        json.loads(r.model_dump_json(exclude={"timestamp"}, exclude_none=True))


def test_json_body_leaves_out_none_fields_but_not_nones_inside_data():
    r = Record.model_validate(record(extra={"gone": None}, phase=None, context={"user_id": "u"}))
    body = json.loads(make("x").message(r).body)
    assert "phase" not in body and body["extra"] == {"gone": None}  # data is kept as sent
    assert body["context"] == {"user_id": "u"}
    assert "status_reason" not in body["action"] and "cluster_id" not in body["action"]["entity"]
    assert body["derived"] == {"oid": "c-1", "oname": "web", "otype": "CLUSTER",
                               "cluster_id": "c-1", "action": "CLUSTER_SCALE_OUT",
                               "status": "ACTIVE", "status_reason": "Cluster scaled out",
                               "meta_data": {"gone": None}, "user": "u"}
    assert None not in [*body["action"].values(), *body["action"]["entity"].values()]


FULL_NODE = {
    "type": "NODE", "id": "11111111-1111-4111-8111-111111111111", "name": "n1",
    "profile_id": "22222222-2222-4222-8222-222222222222", "cluster_id": "",
    "init_at": "2026-12-01T06:00:00.123456Z", "created_at": "2026-12-01T08:00:01+02:00",
    "status": "ACTIVE", "user": "owner", "project": "p-owner", "domain": "", "index": 3,
    "role": "", "metadata": {"k": "café"}, "data": {}, "dependents": {},
}


def test_senlin_body_is_an_oslo_v2_envelope_of_versioned_objects():
    n = node_record()
    message = make("x", format="senlin", publisher_id="senlin-engine:h1").message(n)
    envelope = json.loads(message.body)
    assert envelope["oslo.version"] == "2.0"
    inner = json.loads(envelope["oslo.message"])
    assert (inner["message_id"], inner["publisher_id"], inner["event_type"], inner["priority"]) == (
        n.id, "senlin-engine:h1", "node.reboot.end", "INFO"
    )
    assert inner["_unique_id"] == n.id.replace("-", "")
    payload = inner["payload"]
    assert payload["senlin_object.name"] == "NodeActionPayload"
    assert list(payload["senlin_object.data"]) == ["node", "action", "exception"]
    assert payload["senlin_object.data"]["exception"] is None
    node = payload["senlin_object.data"]["node"]
    assert node["senlin_object.name"] == "NodePayload"
    assert node["senlin_object.data"]["cluster_id"] == "c-1"
    action = payload["senlin_object.data"]["action"]["senlin_object.data"]
    # JsonField primitives are JSON text; an empty status_reason is '', as Senlin sends it.
    assert action["action"] == "NODE_OPERATION" and action["inputs"] == '{"operation": "reboot"}'
    assert action["status_reason"] == "" and action["end_time"] is None


def test_senlin_payload_has_every_field_in_senlins_encodings():
    body = record(phase="end", action={
        "action": "NODE_OPERATION", "id": "33333333-3333-4333-8333-333333333333", "name": "",
        "status": "RUNNING", "target": FULL_NODE["id"], "user": "u1", "project": "p1",
        "created_at": "2026-12-01T06:00:02.999Z", "start_time": 1764568800.5, "timeout": 3600,
        "inputs": {"operation": "reboot"}, "entity": FULL_NODE,
    })
    inner = json.loads(json.loads(
        make("x", format="senlin").message(Record.model_validate(body)).body)["oslo.message"])
    data = inner["payload"]["senlin_object.data"]
    node = data["node"]["senlin_object.data"]
    assert list(node) == [name for name, _ in notifications.NODE_FIELDS]  # Senlin's order
    assert node["init_at"] == "2026-12-01T06:00:00Z"  # oslo isotime: UTC, whole seconds
    assert node["created_at"] == "2026-12-01T06:00:01Z"  # converted from +02:00
    assert (node["updated_at"], node["physical_id"]) == (None, None)  # nullable: sent as null
    assert node["metadata"] == r'{"k": "caf\u00e9"}' and node["dependents"] == "{}"
    assert (node["index"], node["role"], node["domain"]) == (3, "", "")
    assert (node["user"], node["project"]) == ("owner", "p-owner")  # the entity's, as Senlin
    assert node["status_reason"] == ""
    action = data["action"]["senlin_object.data"]
    assert list(action) == [name for name, _ in notifications.ACTION_FIELDS]
    assert (action["name"], action["created_at"], action["start_time"]) == (
        "", "2026-12-01T06:00:02Z", 1764568800.5)
    assert (action["outputs"], action["data"], action["timeout"]) == ("{}", "{}", 3600)


def test_senlin_payload_leaves_out_only_required_fields_a_record_lacks():
    """Senlin cannot build a payload without them; null would fail a consumer's whole parse."""
    inner = json.loads(json.loads(
        make("x", format="senlin").message(Record.model_validate(record())).body
    )["oslo.message"])
    cluster = inner["payload"]["senlin_object.data"]["cluster"]["senlin_object.data"]
    nullable = {name for name, null in notifications.CLUSTER_FIELDS if null}
    assert nullable <= set(cluster) and all(cluster[name] is None for name in nullable)
    assert set(cluster) - nullable == {"id", "name", "status", "status_reason", "user", "project"}
    assert (cluster["user"], cluster["project"]) == ("user-1", "project-1")  # the action's


def test_senlin_envelope_time_and_context():
    r = Record.model_validate(record(timestamp="2026-12-01T08:00:00+02:00", context={
        "user_id": "u1", "project_id": "p1", "roles": ["member"], "request_id": "req-1",
        "is_admin": False, "region_name": "RegionOne",
    }))
    inner = json.loads(json.loads(make("x", format="senlin").message(r).body)["oslo.message"])
    assert inner["timestamp"] == "2026-12-01 06:00:00"  # str(utcnow()): no fraction when zero
    context = {k.removeprefix("_context_"): v for k, v in inner.items() if k.startswith("_context_")}
    assert list(context) == list(notifications.CONTEXT_KEYS)
    assert (context["user"], context["user_id"], context["project"], context["project_id"]) == (
        "u1", "u1", "p1", "p1")
    assert context["user_identity"] == "u1 p1 - - -"  # as oslo.context derives it
    assert (context["roles"], context["is_admin"], context["region_name"]) == (
        ["member"], False, "RegionOne")
    assert all(context[k] is None for k in ("auth_token", "auth_token_info", "password"))
    later = r.model_copy(update={"timestamp": datetime(2026, 12, 1, 6, 0, 0, 5, tzinfo=UTC)})
    inner = json.loads(json.loads(make("x", format="senlin").message(later).body)["oslo.message"])
    assert inner["timestamp"] == "2026-12-01 06:00:00.000005"


def test_senlin_context_without_one_is_the_actions_user():
    r = Record.model_validate(record())
    inner = json.loads(json.loads(make("x", format="senlin").message(r).body)["oslo.message"])
    assert (inner["_context_user_id"], inner["_context_project_id"]) == ("user-1", "project-1")
    assert inner["_context_user_identity"] == "user-1 project-1 - - -"
    assert inner["_context_request_id"] is None


def test_batch_messages_carry_the_json_formats_objects():
    records = [Record.model_validate(record(level=level)) for level in ("INFO", "ERROR", "DEBUG")]
    records[1] = records[1].model_copy(update={"timestamp": datetime(2020, 1, 1, tzinfo=UTC)})
    [message] = make("x", format="batch").messages(records)
    key = message.key
    per_event = make("x")  # the json format, for comparison
    assert json.loads(message.body) == [json.loads(per_event.message(r).body) for r in records]
    assert key == "batch" and message.properties.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    props = message.properties
    assert (props.content_type, props.content_encoding, props.message_type, props.app_id) == (
        "application/json", "utf-8", "dispatchd.batch", "dispatchd"
    )
    assert message.properties.message_id == f"{records[0].id}..{records[-1].id}"
    assert message.properties.timestamp == datetime(2020, 1, 1, tzinfo=UTC)  # the oldest record's
    assert props.headers == {"count": 3, "level": 40, "priority": "ERROR"}  # the highest level


def test_batches_are_cut_by_count_then_bytes_and_are_reproducible():
    records = [Record.model_validate(record()) for _ in range(250)]
    by_count = make("x", format="batch", batch_max=100).messages(records)
    assert [m.properties.headers["count"] for m in by_count] == [100, 100, 50]
    again = make("x", format="batch", batch_max=100).messages(records)
    assert [m.properties.message_id for m in again] == [m.properties.message_id for m in by_count]
    one = len(make("x").message(records[0]).body)
    by_bytes = make("x", format="batch", batch_max=100, batch_max_bytes=10 * one + 11).messages(
        records[:25]
    )
    assert [m.properties.headers["count"] for m in by_bytes] == [10, 10, 5]
    assert all(len(m.body) <= 10 * one + 11 for m in by_bytes)
    [alone] = make("x", format="batch", batch_max_bytes=1).messages(records[:1])
    assert alone.properties.headers["count"] == 1  # a record over the limit still goes, on its own


# -- publishing to the real broker ------------------------------------------------------------


async def test_a_batch_is_published_persistent_and_confirmed():
    async with bound_queue() as bound:
        dispatcher = make(bound.exchange)
        await dispatcher.start()
        try:
            records = [Record.model_validate(record()) for _ in range(250)]
            await dispatcher.dump_batch(records)
            single = Record.model_validate(record())
            await dispatcher.dump(single.level, single.action, **single.dump_kwargs())
        finally:
            await dispatcher.close()
        got = await bound.drain(251)
    assert [m.message_id for m in got] == [r.id for r in [*records, single]]  # in order
    assert {m.routing_key for m in got} == {"cluster.scale_out.end"}
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)


async def test_batch_format_publishes_ceil_n_over_batch_max_messages():
    async with bound_queue() as bound:
        dispatcher = make(bound.exchange, format="batch", batch_max=120)
        await dispatcher.start()
        try:
            records = [Record.model_validate(record()) for _ in range(500)]
            await dispatcher.dump_batch(records)
            single = Record.model_validate(record())
            await dispatcher.dump(single.level, single.action, **single.dump_kwargs())
        finally:
            await dispatcher.close()
        got = await bound.drain(6)
        assert await bound.drain(1, timeout=0.5) == []  # and nothing more
    assert [m.headers["count"] for m in got] == [120, 120, 120, 120, 20, 1]
    bodies = [json.loads(m.body) for m in got]
    assert [event["id"] for body in bodies for event in body] == [r.id for r in [*records, single]]
    assert [m.message_id for m in got] == [f"{b[0]['id']}..{b[-1]['id']}" for b in bodies]
    assert {(m.routing_key, m.type, m.content_type) for m in got} == {
        ("batch", "dispatchd.batch", "application/json")
    }
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in got)
    assert bodies[-1][0]["event_type"] == "cluster.scale_out.end"


@pytest.mark.parametrize(("options", "count"), [({}, 3), ({"format": "batch", "batch_max": 2}, 2)])
async def test_a_nack_is_a_failure_that_spends_an_attempt(options, count):
    require_service("RabbitMQ", "127.0.0.1", 5672)
    name = f"dispatchd-test-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBIT_URL)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    # A full queue that rejects publishes makes the broker nack whatever is routed to it.
    queue = await channel.declare_queue(
        "", exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await queue.bind(exchange, "#")
    dispatcher = make(name, **options)
    try:
        with pytest.raises(RuntimeError, match=f"nacked {count} of {count} messages"):
            await dispatcher.dump_batch([Record.model_validate(record()) for _ in range(3)])
    finally:
        await dispatcher.close()
        await exchange.delete()
        await connection.close()


@pytest.mark.parametrize("options", [{}, {"format": "batch"}])
async def test_broker_absent_at_start_then_back(options):
    async with bound_queue() as bound:
        proxy = TcpProxy()
        await proxy.start()
        await proxy.cut()  # nothing listens on the broker's address yet
        dispatcher = MessageDispatcher("message", MessageOptions(
            url=proxy.url, exchange=bound.exchange, connect_timeout=2, **options))
        try:
            await dispatcher.start()  # not fatal
            with pytest.raises(Unavailable, match="cannot reach amqp://guest@localhost"):
                await dispatcher.dump_batch([Record.model_validate(record())])
            await proxy.restore()
            r = Record.model_validate(record())
            await dispatcher.dump_batch([r])
            want = dispatcher.message(r).id
            assert [m.message_id for m in await bound.drain(1)] == [want]
            await proxy.cut()  # the broker goes away after a connection was made
            with pytest.raises(Unavailable):
                await dispatcher.dump_batch([Record.model_validate(record())])
            await proxy.restore()
            r = Record.model_validate(record())
            await dispatcher.dump_batch([r])
            want = dispatcher.message(r).id
            assert want in [m.message_id for m in await bound.drain(2, timeout=5)]
        finally:
            await dispatcher.close()
            await proxy.close()


@pytest.mark.parametrize("options", [{}, {"format": "batch", "batch_max": 2}])
async def test_confirms_that_do_not_come_mean_unavailable(options):
    async with bound_queue() as bound:
        proxy = TcpProxy()
        await proxy.start()
        dispatcher = MessageDispatcher("message", MessageOptions(
            url=proxy.url, exchange=bound.exchange, confirm_timeout=0.5, **options))
        try:
            await dispatcher.start()
            proxy.flowing.clear()  # the broker stalls: publishes go out, no confirm comes back
            with pytest.raises(Unavailable, match="no publisher confirm for 0.5s"):
                await dispatcher.dump_batch([Record.model_validate(record()) for _ in range(3)])
            proxy.flowing.set()
            r = Record.model_validate(record())
            await dispatcher.dump_batch([r])  # reconnected: the retry goes through
            want = dispatcher.message(r).id
            assert want in {m.message_id for m in await bound.drain({want}, timeout=5)}
        finally:
            await dispatcher.close()
            await proxy.close()


async def test_another_client_library_reads_the_messages():
    pika = pytest.importorskip("pika")
    async with bound_queue() as bound:
        dispatcher = make(bound.exchange)
        records = [Record.model_validate(record()) for _ in range(5)]
        params = pika.URLParameters(RABBIT_URL)
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, bound.exchange, "cluster.#")
        try:
            await dispatcher.dump_batch(records)
        finally:
            await dispatcher.close()
        got = []
        for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=5):
            if method is None:
                break
            got.append((method.routing_key, properties, json.loads(body)))
            if len(got) == len(records):
                break
        connection.close()
    assert [props.message_id for _, props, _ in got] == [r.id for r in records]
    key, props, body = got[0]
    assert key == "cluster.scale_out.end" and props.delivery_mode == 2
    assert props.content_type == "application/json" and props.headers["priority"] == "INFO"
    assert body["derived"]["oname"] == "web"


# -- unroutable messages, default queues, exchanges declared by others ------------------------


@pytest.mark.parametrize(
    ("options", "messages"),
    [({}, 3), ({"format": "senlin", "default_queue": False}, 3), ({"format": "batch"}, 1)],
)
async def test_unroutable_messages_are_counted_logged_once_per_key_and_passed_on(
    options, messages, caplog
):
    require_service("RabbitMQ", "127.0.0.1", 5672)
    name = f"dispatchd-test-{uuid.uuid4().hex[:8]}"  # declared by the dispatcher, no queue bound
    dispatcher = make(name, **options)
    records = [Record.model_validate(record(level=level)) for level in ("INFO", "INFO", "ERROR")]
    try:
        with caplog.at_level("WARNING", logger="dispatchd.dispatchers.message"):
            await dispatcher.dump_batch(records)  # returned, not raised: nothing to retry
            await dispatcher.dump_batch(records[:1])
        report = dispatcher.report()
    finally:
        await _delete_exchange(name)
        await dispatcher.close()
    keys = {dispatcher.message(r).key for r in records} if messages > 1 else {"batch"}
    assert report["unroutable"] == 4 and report["unroutable_messages"] == messages + 1
    assert report["unroutable_keys"] == len(keys) and report["last_unroutable_key"] in keys
    lines = [r.getMessage() for r in caplog.records if "route to no queue" in r.getMessage()]
    assert sorted(re.search(r"routing key '([^']+)'", line)[1] for line in lines) == sorted(keys)


async def test_senlin_default_queues_hold_notifications_once_declared_per_connection():
    async with fresh_vhost_async() as vhost:
        dispatcher = MessageDispatcher("message", MessageOptions(url=vhost.amqp_url, format="senlin"))
        connection = await aio_pika.connect(vhost.amqp_url)
        try:
            info, warn = (Record.model_validate(record(level=level)) for level in (20, 30))
            await dispatcher.dump_batch([info, warn])  # nobody listens yet: the queues hold them
            channel = await connection.channel()
            for key, want in (("info", info), ("warn", warn)):
                queue = await channel.declare_queue(f"versioned_notifications.{key}", passive=True)
                got = await queue.get(no_ack=True, timeout=5)
                assert got.message_id == want.id and got.routing_key == queue.name
            assert dispatcher.report()["unroutable"] == 0
            # Declared once per connection, as oslo's notifier: a queue deleted meanwhile is
            # not declared again until the next connection, and what is sent till then is counted.
            await channel.queue_delete("versioned_notifications.info")
            await dispatcher.dump_batch([info])
            assert dispatcher.report()["unroutable"] == 1
            await dispatcher.close()
            await dispatcher.dump_batch([info])  # reconnects, declares again
            queue = await channel.declare_queue("versioned_notifications.info", passive=True)
            assert (await queue.get(no_ack=True, timeout=5)).message_id == info.id
        finally:
            await dispatcher.close()
            await connection.close()


async def test_a_default_queue_declared_otherwise_by_a_consumer_is_used_as_it_is():
    async with fresh_vhost_async() as vhost:
        connection = await aio_pika.connect(vhost.amqp_url)
        channel = await connection.channel()
        # A consumer's own durable, unbound queue of that name (oslo with amqp_durable_queues).
        queue = await channel.declare_queue("versioned_notifications.error", durable=True)
        dispatcher = MessageDispatcher("message", MessageOptions(url=vhost.amqp_url, format="senlin"))
        try:
            r = Record.model_validate(record(level="ERROR"))
            await dispatcher.dump_batch([r])
            assert (await queue.get(no_ack=True, timeout=5)).message_id == r.id
            assert dispatcher.report()["unroutable"] == 0
        finally:
            await dispatcher.close()
            await connection.close()


async def test_an_exchange_declared_with_other_durability_is_used_as_it_is(caplog):
    async with bound_queue(durable=False) as bound:  # as oslo.messaging declares it
        dispatcher = make(bound.exchange)  # the json format declares durable
        try:
            with caplog.at_level("WARNING", logger="dispatchd.dispatchers.message"):
                r = Record.model_validate(record())
                await dispatcher.dump_batch([r])
        finally:
            await dispatcher.close()
        assert [m.message_id for m in await bound.drain(1)] == [r.id]
    assert "exists with other arguments" in caplog.text and "PRECONDITION_FAILED" in caplog.text


async def _delete_exchange(name: str) -> None:
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(name)
    finally:
        await connection.close()


async def test_amqps_with_a_private_ca():
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_tls)
    async with bound_queue() as bound:
        proxy = TcpProxy(tls=server_tls)
        await proxy.start()
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca_file:
            ca.cert_pem.write_to_path(ca_file.name)
            trusted = make(bound.exchange, url=proxy.url, ssl_ca_file=ca_file.name)
            untrusted = make(bound.exchange, url=proxy.url, connect_timeout=2)
            try:
                r = Record.model_validate(record())
                await trusted.dump_batch([r])
                assert [m.message_id for m in await bound.drain(1)] == [r.id]
                with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED|SSL"):
                    await untrusted.dump_batch([r])  # the system CAs do not know our CA
            finally:
                await trusted.close()
                await untrusted.close()
                await proxy.close()
