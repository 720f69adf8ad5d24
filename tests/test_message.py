"""The ``message`` dispatcher against the real RabbitMQ on this machine (never mocked)."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import tempfile
import threading
import time
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
    assert (senlin_opts.exchange, senlin_opts.routing_key) == (
        "senlin", "versioned_notifications.{priority}"
    )
    assert MessageOptions(format="senlin", exchange="x").exchange == "x"


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
    assert MessageDispatcher("m", opts).messages([Record.model_validate(record())])[0][0] == (
        "events.{all}"
    )


def test_password_never_shown():
    assert MessageOptions(url="amqp://u:s3cret@h:5672/v").safe_url == "amqp://u@h:5672/v"


def test_event_types_are_senlins():
    r = Record.model_validate(record())
    assert notifications.event_type(r, r.derived()) == "cluster.scale_out.end"
    n = node_record(phase=None)
    assert notifications.event_type(n, n.derived()) == "node.reboot"


def test_message_properties_and_json_body():
    r = Record.model_validate(record(level="ERROR", timestamp="2026-11-28T06:00:00Z"))
    key, message = make("x", routing_key="{otype}.{priority}.{event_type}").message(r)
    assert key == "cluster.error.cluster.scale_out.end"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (message.content_type, message.message_id, message.type) == (
        "application/json", r.id, "cluster.scale_out.end"
    )
    assert message.timestamp == datetime(2026, 11, 28, 6, tzinfo=UTC)
    assert message.headers == {"level": 40, "priority": "ERROR"}
    body = json.loads(message.body)
    assert body["id"] == r.id and body["action"]["entity"]["name"] == "web"
    assert body["derived"]["cluster_id"] == "c-1" and body["derived"]["meta_data"] == {"count": 2}
    assert (body["event_type"], body["priority"]) == ("cluster.scale_out.end", "ERROR")
    assert body["timestamp"] == "2026-11-28T06:00:00Z"


def test_json_body_is_the_record_as_posted_in_utf8():
    r = Record.model_validate(record(reason="scaled out ☕ café", extra={"nested": [1, None]}))
    _, message = make("x").message(r)
    assert "café".encode() in message.body  # UTF-8 as declared, not \u escapes
    body = json.loads(message.body)
    assert {k: body[k] for k in ("id", "level", "phase", "reason", "extra", "action")} == \
        json.loads(r.model_dump_json(exclude={"timestamp"}))


def test_senlin_body_is_an_oslo_v2_envelope_of_versioned_objects():
    n = node_record()
    _, message = make("x", format="senlin", publisher_id="senlin-engine:h1").message(n)
    envelope = json.loads(message.body)
    assert envelope["oslo.version"] == "2.0"
    inner = json.loads(envelope["oslo.message"])
    assert (inner["message_id"], inner["publisher_id"], inner["event_type"], inner["priority"]) == (
        n.id, "senlin-engine:h1", "node.reboot.end", "INFO"
    )
    payload = inner["payload"]
    assert payload["senlin_object.name"] == "NodeActionPayload"
    node = payload["senlin_object.data"]["node"]
    assert node["senlin_object.name"] == "NodePayload"
    assert node["senlin_object.data"]["cluster_id"] == "c-1"
    action = payload["senlin_object.data"]["action"]["senlin_object.data"]
    assert action["action"] == "NODE_OPERATION" and action["inputs"] == {"operation": "reboot"}


def test_batch_messages_carry_the_json_formats_objects():
    records = [Record.model_validate(record(level=level)) for level in ("INFO", "ERROR", "DEBUG")]
    records[1] = records[1].model_copy(update={"timestamp": datetime(2020, 1, 1, tzinfo=UTC)})
    [(key, message)] = make("x", format="batch").messages(records)
    per_event = make("x")  # the json format, for comparison
    assert json.loads(message.body) == [json.loads(per_event.message(r)[1].body) for r in records]
    assert key == "batch" and message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (message.content_type, message.content_encoding, message.type, message.app_id) == (
        "application/json", "utf-8", "dispatchd.batch", "dispatchd"
    )
    assert message.message_id == f"{records[0].id}..{records[-1].id}"
    assert message.timestamp == datetime(2020, 1, 1, tzinfo=UTC)  # the oldest record's
    assert message.headers == {"count": 3, "level": 40, "priority": "ERROR"}  # the highest level


def test_batches_are_cut_by_count_then_bytes_and_are_reproducible():
    records = [Record.model_validate(record()) for _ in range(250)]
    by_count = make("x", format="batch", batch_max=100).messages(records)
    assert [m.headers["count"] for _, m in by_count] == [100, 100, 50]
    again = make("x", format="batch", batch_max=100).messages(records)
    assert [m.message_id for _, m in again] == [m.message_id for _, m in by_count]
    one = len(make("x").message(records[0])[1].body)
    by_bytes = make("x", format="batch", batch_max=100, batch_max_bytes=10 * one + 11).messages(
        records[:25]
    )
    assert [m.headers["count"] for _, m in by_bytes] == [10, 10, 5]
    assert all(len(m.body) <= 10 * one + 11 for _, m in by_bytes)
    [(_, alone)] = make("x", format="batch", batch_max_bytes=1).messages(records[:1])
    assert alone.headers["count"] == 1  # a record over the limit still goes, on its own


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
            want = dispatcher.message(r)[1].message_id
            assert [m.message_id for m in await bound.drain(1)] == [want]
            await proxy.cut()  # the broker goes away after a connection was made
            with pytest.raises(Unavailable):
                await dispatcher.dump_batch([Record.model_validate(record())])
            await proxy.restore()
            r = Record.model_validate(record())
            await dispatcher.dump_batch([r])
            want = dispatcher.message(r)[1].message_id
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
            with pytest.raises(Unavailable, match="confirms not in after 0.5s"):
                await dispatcher.dump_batch([Record.model_validate(record()) for _ in range(3)])
            proxy.flowing.set()
            r = Record.model_validate(record())
            await dispatcher.dump_batch([r])  # reconnected: the retry goes through
            want = dispatcher.message(r)[1].message_id
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


async def test_senlin_format_is_read_by_an_oslo_messaging_notification_listener():
    oslo_messaging = pytest.importorskip("oslo_messaging")
    from oslo_config import cfg

    require_service("RabbitMQ", "127.0.0.1", 5672)
    exchange = f"senlin-test-{uuid.uuid4().hex[:8]}"
    received: list[tuple] = []
    done = threading.Event()

    class Endpoint:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            received.append((ctxt, publisher_id, event_type, payload, metadata))
            done.set()

        error = info

    conf = cfg.ConfigOpts()
    conf([], project="dispatchd-test")
    transport = oslo_messaging.get_notification_transport(conf, url="rabbit://guest:guest@127.0.0.1:5672/")
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    targets = [oslo_messaging.Target(topic="versioned_notifications", exchange=exchange)]
    listener = oslo_messaging.get_notification_listener(
        transport, targets, [Endpoint()], executor="threading"
    )
    listener.start()
    try:
        await _wait_for_binding(exchange)
        dispatcher = make(exchange, format="senlin", publisher_id="senlin-engine:test")
        r = Record.model_validate(record(level="ERROR"))
        try:
            await dispatcher.dump_batch([r])
        finally:
            await dispatcher.close()
        await asyncio.to_thread(done.wait, 20)
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
    [(ctxt, publisher_id, event_type, payload, metadata)] = received
    assert (publisher_id, event_type) == ("senlin-engine:test", "cluster.scale_out.end")
    assert metadata["message_id"] == r.id
    assert ctxt["user_id"] == "user-1" and ctxt["project_id"] == "project-1"
    assert payload["senlin_object.name"] == "ClusterActionPayload"
    cluster = payload["senlin_object.data"]["cluster"]["senlin_object.data"]
    assert (cluster["id"], cluster["name"], cluster["status"]) == ("c-1", "web", "ACTIVE")


async def _wait_for_binding(exchange: str) -> None:
    """The listener declares its queue in a thread; publishing before that would drop messages."""
    connection = await aio_pika.connect(RABBIT_URL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            channel = await connection.channel()
            try:
                await channel.declare_queue("versioned_notifications.error", passive=True)
                await channel.declare_exchange(exchange, passive=True)
                return
            except aio_pika.exceptions.ChannelClosed:
                await asyncio.sleep(0.1)
        raise TimeoutError("the oslo listener did not bind its queue")
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
