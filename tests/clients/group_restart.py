"""A confluent-kafka group that keeps consuming while the test kills the server
(kill -9) and starts it again: two members commit every 100 messages, a watcher
reads the committed offsets all along. At the end every message was consumed, and
no committed offset ever went back.

usage: group_restart.py BROKER TOPIC PARTITIONS N
Prints `progress` lines while it consumes (the test kills the server on them), then
OK; exits non-zero with the reason otherwise."""

import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

broker, topic, partitions, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
group = "riding-out"
stop = threading.Event()
lock = threading.Lock()
seen = set()
problems = []


def produce():
    p = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 5})
    for i in range(N):
        while True:
            try:
                p.produce(topic, key=str(i), value=str(i))
                break
            except BufferError:
                p.poll(0.1)
        if i % 500 == 0:
            p.poll(0)
            time.sleep(0.05)  # spread over the run, so kills land mid-stream
    if p.flush(120) != 0:
        problems.append("produce did not finish")


def member(name):
    c = Consumer({
        "bootstrap.servers": broker,
        "group.id": group,
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
    })
    c.subscribe([topic])
    count = 0
    while not stop.is_set():
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        with lock:
            seen.add(int(m.value()))
            total = len(seen)
        count += 1
        if count % 100 == 0:
            try:
                c.commit(asynchronous=False)
            except KafkaException:
                pass  # the server is down or the group rebalances: the next one counts
        if total % 2000 == 0:
            print("progress", total, flush=True)
    try:
        c.commit(asynchronous=False)
    except KafkaException:
        pass
    # librdkafka can hang for good in close() when a rebalance assigns partitions
    # while it closes (confluentinc/librdkafka#4884, open): leave the group first
    # and serve the revoke, then close with nothing assigned.
    c.unsubscribe()
    until = time.time() + 15
    while c.assignment() and time.time() < until:
        c.poll(0.1)
    c.close()


def watch():
    c = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    high = [-1] * partitions
    while not stop.is_set():
        try:
            got = c.committed(tps, timeout=2)
        except KafkaException:
            time.sleep(0.2)
            continue
        for tp in got:
            if tp.error is None and tp.offset >= 0:
                if tp.offset < high[tp.partition]:
                    problems.append(f"partition {tp.partition}: committed {tp.offset} after {high[tp.partition]}")
                high[tp.partition] = max(high[tp.partition], tp.offset)
        time.sleep(0.1)
    c.close()


threads = [threading.Thread(target=produce)]
threads += [threading.Thread(target=member, args=(n,)) for n in ("a", "b")]
threads.append(threading.Thread(target=watch))
for t in threads:
    t.start()
deadline = time.time() + 240
while time.time() < deadline:
    with lock:
        if len(seen) >= N:
            break
    time.sleep(0.2)
stop.set()
for t in threads:
    t.join()
missing = N - len(seen)
if missing:
    problems.append(f"{missing} of {N} never consumed")
if problems:
    print("FAIL:", "; ".join(problems[:5]))
    sys.exit(1)
print("OK")
