"""The platform is real: a Kafka broker with transactions, a PostgreSQL, and a broker script
that starts and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from sqlalchemy import text
from sqlmodel import Field, Session, SQLModel, create_engine, select

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
WAIT_S = 60


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    try:
        admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            timeout_ms=15_000,
        )
        # The controller accepts the topic before every broker's metadata shows its
        # partitions (seconds on a loaded machine): wait for them, boundedly.
        deadline = time.monotonic() + WAIT_S
        while True:
            described = admin.describe_topics([name])
            if len(described[0]["partitions"]) == partitions or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(described[0]["partitions"]) == partitions
    finally:
        admin.close()


async def consume(
    bootstrap: str,
    topic: str,
    until: Callable[[list[tuple[int, int, bytes, bytes]]], bool],
    isolation_level: str = "read_uncommitted",
) -> list[tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of the topic's records from the start, until `until`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
        request_timeout_ms=15_000,
    )
    records: list[tuple[int, int, bytes, bytes]] = []

    async def drain() -> None:
        while not until(records):
            batches = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for tp, batch in batches.items():
                records.extend((tp.partition, m.offset, m.key, m.value) for m in batch)

    await asyncio.wait_for(consumer.start(), WAIT_S)
    try:
        await asyncio.wait_for(drain(), WAIT_S)
    finally:
        await consumer.stop()
    return records


@pytest.mark.kafka
def test_10k_keyed_messages_round_trip_in_order_per_partition(
    kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    topic = fresh_topic()
    partitions = 6
    create_topic(kafka_bootstrap, topic, partitions)

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=15_000,
    )
    try:
        futures = []
        for i in range(10_000):
            key, value = f"patient-{i % 97}".encode(), f"{i}".encode()
            futures.append((key, value, producer.send(topic, key=key, value=value)))
        producer.flush(timeout=WAIT_S)
        sent: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
        partition_of_key: dict[bytes, int] = {}
        for key, value, future in futures:
            meta = future.get(timeout=WAIT_S)
            sent[meta.partition].append((meta.offset, key, value))
            assert partition_of_key.setdefault(key, meta.partition) == meta.partition
    finally:
        producer.close(timeout=10)

    received = asyncio.run(consume(kafka_bootstrap, topic, lambda r: len(r) >= 10_000))

    assert len(received) == 10_000
    got: dict[int, list[tuple[int, bytes, bytes]]] = defaultdict(list)
    for partition, offset, key, value in received:
        got[partition].append((offset, key, value))
    assert len(got) > 1, "keys should spread over several partitions"
    for partition, records in sent.items():
        # The send order, the offsets and the consumed order agree on every partition.
        assert got[partition] == records
        assert [offset for offset, _, _ in records] == list(range(len(records)))


@pytest.mark.kafka
def test_transactions_commit_is_seen_and_abort_is_not(
    kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    topic = fresh_topic()
    create_topic(kafka_bootstrap, topic, 1)
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        transactional_id=f"platform-test-{uuid.uuid4().hex}",
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=15_000,
    )
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, key=b"k", value=f"committed-{i}".encode())
        producer.commit_transaction()

        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, key=b"k", value=f"aborted-{i}".encode())
        producer.flush(timeout=WAIT_S)
        producer.abort_transaction()

        producer.begin_transaction()
        producer.send(topic, key=b"k", value=b"committed-last")
        producer.commit_transaction()
    finally:
        producer.close(timeout=10)

    def saw_last(records: list[tuple[int, int, bytes, bytes]]) -> bool:
        return any(value == b"committed-last" for _, _, _, value in records)

    committed = asyncio.run(consume(kafka_bootstrap, topic, saw_last, "read_committed"))
    assert [value for *_, value in committed] == [
        b"committed-0",
        b"committed-1",
        b"committed-2",
        b"committed-last",
    ]
    # The aborted records were written; only read_committed hides them.
    everything = asyncio.run(consume(kafka_bootstrap, topic, saw_last, "read_uncommitted"))
    assert [v for *_, v in everything if v.startswith(b"aborted-")] == [
        b"aborted-0",
        b"aborted-1",
        b"aborted-2",
    ]


class PlatformProbe(SQLModel, table=True):
    # Unique per run, so concurrent runs on one database never share the table.
    __tablename__ = f"platform_probe_{uuid.uuid4().hex[:10]}"

    id: int | None = Field(default=None, primary_key=True)
    patient: str = Field(index=True)
    systolic: int


@pytest.mark.postgres
def test_sqlmodel_rows_round_trip_on_postgresql(database_url: str) -> None:
    engine = create_engine(database_url, connect_args={"connect_timeout": 10})
    table = PlatformProbe.__table__  # type: ignore[attr-defined]
    try:
        assert engine.dialect.name == "postgresql"
        table.create(engine)
        try:
            with Session(engine) as session:
                session.add_all(
                    [PlatformProbe(patient=f"p{i % 3}", systolic=110 + i) for i in range(30)]
                )
                session.commit()
            with Session(engine) as session:
                version = session.exec(text("SELECT version()")).one()[0]  # type: ignore[call-overload]
                rows = session.exec(
                    select(PlatformProbe)
                    .where(PlatformProbe.patient == "p1")
                    .order_by(PlatformProbe.id)  # type: ignore[arg-type]
                ).all()
            assert version.startswith("PostgreSQL")
            assert [r.systolic for r in rows] == [110 + i for i in range(1, 30, 3)]
            assert all(r.id is not None for r in rows)
        finally:
            table.drop(engine)
    finally:
        engine.dispose()


def free_port_pair() -> int:
    """A port p with p and p + 1 free on 127.0.0.1 (broker and controller)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 60_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no free port pair")


@pytest.mark.kafka
def test_kafka_sh_starts_and_stops_twice(tmp_path: Path) -> None:
    port = free_port_pair()
    default_home = Path(
        os.environ.get("REMSGUARD_KAFKA_HOME", Path.home() / ".cache" / "remsguard" / "kafka")
    )
    env = {
        **os.environ,
        "REMSGUARD_KAFKA_HOME": str(tmp_path / "kafka"),
        # Share the resolved jars with the default broker.
        "REMSGUARD_KAFKA_LIBS": os.environ.get("REMSGUARD_KAFKA_LIBS", str(default_home / "libs")),
        "REMSGUARD_KAFKA_PORT": str(port),
        "REMSGUARD_KAFKA_HEAP": "-Xmx256m -Xms128m",
    }
    address = f"127.0.0.1:{port}"

    def run(cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(KAFKA_SH), cmd],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,  # a first run also resolves the jars
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def status() -> int:
        return run("status").returncode

    try:
        assert status() == 3
        for _ in range(2):
            started = run("start")
            assert started.returncode == 0, started.stderr[-3000:]
            assert started.stdout.strip().splitlines()[-1] == address
            assert status() == 0
            again = run("start")  # idempotent
            assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == address
            admin = KafkaAdminClient(bootstrap_servers=address, request_timeout_ms=10_000)
            try:
                assert admin.describe_cluster()["brokers"]
            finally:
                admin.close()
            stopped = run("stop")
            assert stopped.returncode == 0, stopped.stderr[-3000:]
            assert status() == 3
            assert run("stop").returncode == 0  # idempotent
    finally:
        run("stop")
