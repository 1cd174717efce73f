"""Consumer groups with the pure-Python clients, kafka-python and aiokafka, at their
default group settings: two members split a topic, commit, and a new member of the
group resumes from the committed offsets.

usage: group_python.py BROKER TOPIC PARTITIONS (kafka-python|aiokafka)
Exits non-zero with the reason when anything is not as Kafka would do it."""

import asyncio
import sys
import time

broker, topic, partitions, client = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
group = "group-" + client
N, M = 1000, 200


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def produce(first, count):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=broker, acks="all")
    for i in range(first, first + count):
        p.send(topic, key=str(i).encode(), value=str(i).encode())
    p.flush(30)
    p.close()


def with_kafka_python():
    import threading

    from kafka import KafkaConsumer, TopicPartition

    def member():
        return KafkaConsumer(topic, bootstrap_servers=broker, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False)

    # One thread per member, each polling longer than a rebalance takes, as
    # applications do: kafka-python 3.0 drops a join that completes between two
    # polls and joins again.
    seen = {}
    lock = threading.Lock()
    stop = threading.Event()
    members = {"a": member(), "b": member()}

    def run(name, c):
        while not stop.is_set():
            for records in c.poll(timeout_ms=5000).values():
                with lock:
                    for r in records:
                        seen.setdefault(r.value.decode(), set()).add(name)
            c.commit()

    threads = [threading.Thread(target=run, args=m) for m in members.items()]
    for t in threads:
        t.start()
    deadline = time.time() + 90
    while time.time() < deadline:
        with lock:
            done = len(seen) >= N
        a, b = ({tp.partition for tp in c.assignment()} for c in members.values())
        if done and a and b and not a & b and a | b == set(range(partitions)):
            break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    if len(seen) < N:
        fail(f"consumed {len(seen)} of {N}")
    owned_a, owned_b = ({tp.partition for tp in c.assignment()} for c in members.values())
    if owned_a & owned_b or owned_a | owned_b != set(range(partitions)):
        fail(f"not a split: a {owned_a}, b {owned_b}")
    print(f"split: a {sorted(owned_a)}, b {sorted(owned_b)}")
    for c in members.values():
        c.close()
    produce(N, M)
    c = member()
    got = set()
    deadline = time.time() + 60
    while len(got) < M and time.time() < deadline:
        for records in c.poll(timeout_ms=5000).values():
            for r in records:
                got.add(int(r.value.decode()))
    old = sorted(v for v in got if v < N)
    if old or got != set(range(N, N + M)):
        fail(f"the new member got {len(got)} values, {len(old)} already committed")
    c.commit()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = c.end_offsets(tps)
    for tp in tps:
        if c.committed(tp) != ends[tp]:
            fail(f"{tp}: committed {c.committed(tp)}, end {ends[tp]}")
    c.close()


async def with_aiokafka():
    from aiokafka import AIOKafkaConsumer

    def member():
        return AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)

    a, b = member(), member()
    await a.start()
    await b.start()
    seen = {}
    deadline = time.time() + 90
    def settled():
        x = {tp.partition for tp in a.assignment()}
        y = {tp.partition for tp in b.assignment()}
        return x and y and not x & y and x | y == set(range(partitions))

    while (len(seen) < N or not settled()) and time.time() < deadline:
        for name, c in (("a", a), ("b", b)):
            got = await c.getmany(timeout_ms=100)
            for records in got.values():
                for r in records:
                    seen.setdefault(r.value.decode(), set()).add(name)
    if len(seen) < N:
        fail(f"consumed {len(seen)} of {N}")
    owned_a = {tp.partition for tp in a.assignment()}
    owned_b = {tp.partition for tp in b.assignment()}
    if owned_a & owned_b or owned_a | owned_b != set(range(partitions)):
        fail(f"not a split: a {owned_a}, b {owned_b}")
    print(f"split: a {sorted(owned_a)}, b {sorted(owned_b)}")
    await a.commit()
    await b.commit()
    await a.stop()
    await b.stop()
    produce(N, M)
    c = member()
    await c.start()
    got = set()
    deadline = time.time() + 60
    while len(got) < M and time.time() < deadline:
        batch = await c.getmany(timeout_ms=200)
        for records in batch.values():
            for r in records:
                got.add(int(r.value.decode()))
    old = sorted(v for v in got if v < N)
    if old or got != set(range(N, N + M)):
        fail(f"the new member got {len(got)} values, {len(old)} already committed")
    await c.stop()


produce(0, N)
if client == "kafka-python":
    with_kafka_python()
else:
    asyncio.run(with_aiokafka())
print("OK")
