"""A consumer group with confluent-kafka (librdkafka), as applications use it:
subscribe() with a rebalance callback and an assignor, commits, committed(), a
member leaving, and the admin client's group calls.

usage: group_confluent.py BROKER TOPIC PARTITIONS STRATEGY
Exits non-zero with the reason when anything is not as Kafka would do it."""

import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

broker, topic, partitions, strategy = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
group = "group-" + strategy
N, M = 2000, 300


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def produce(first, count):
    p = Producer({"bootstrap.servers": broker, "acks": "all"})
    for i in range(first, first + count):
        p.produce(topic, key=str(i), value=str(i))
    if p.flush(30) != 0:
        fail("produce did not finish")


def consumer(name):
    c = Consumer({
        "bootstrap.servers": broker,
        "group.id": group,
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "partition.assignment.strategy": strategy,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    })
    owned = set()

    def on_assign(c, parts):
        owned.update(p.partition for p in parts)

    def on_revoke(c, parts):
        owned.difference_update(p.partition for p in parts)

    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    return c, owned


def drain(members, want, seconds):
    """Polls the members until `want` values were seen; commits every 50 and at the end."""
    seen = {}
    counts = {name: 0 for name in members}
    deadline = time.time() + seconds
    while not want <= set(seen) and time.time() < deadline:
        for name, (c, _) in members.items():
            m = c.poll(0.1)
            if m is None or m.error():
                continue
            seen.setdefault(m.value().decode(), []).append(name)
            counts[name] += 1
            if counts[name] % 50 == 0:
                c.commit(asynchronous=False)
    for c, _ in members.values():
        try:
            c.commit(asynchronous=False)
        except Exception as e:  # nothing consumed since the last commit
            if "NO_OFFSET" not in str(e):
                raise
    return seen, counts


produce(0, N)
a = consumer("member-a")
b = consumer("member-b")
members = {"a": a, "b": b}
seen, counts = drain(members, {str(i) for i in range(N)}, 90)
missing = {str(i) for i in range(N)} - set(seen)
if missing:
    fail(f"{len(missing)} of {N} never consumed (counts {counts})")
# Both members stay until their assignments are settled: split, disjoint, complete.
deadline = time.time() + 30
def settled():
    return a[1] and b[1] and not a[1] & b[1] and a[1] | b[1] == set(range(partitions))


while time.time() < deadline and not settled():
    for c, _ in members.values():
        c.poll(0.1)
if a[1] & b[1] or a[1] | b[1] != set(range(partitions)) or not a[1] or not b[1]:
    fail(f"assignments not a split of the partitions: a {sorted(a[1])}, b {sorted(b[1])}")
print(f"split: a {sorted(a[1])}, b {sorted(b[1])}; consumed {counts}")

admin = AdminClient({"bootstrap.servers": broker})
listed = admin.list_consumer_groups().result(timeout=20)
if group not in [g.group_id for g in listed.valid]:
    fail(f"list_consumer_groups does not show {group}: {listed.valid}")
desc = admin.describe_consumer_groups([group])[group].result(timeout=20)
if str(desc.state) != "ConsumerGroupState.STABLE" or len(desc.members) != 2:
    fail(f"describe: {desc.state}, {len(desc.members)} members")
if desc.partition_assignor != strategy:
    fail(f"describe says assignor {desc.partition_assignor}, not {strategy}")

# a leaves: b takes every partition and resumes each at the committed offset.
a[0].close()
produce(N, M)
seen2, _ = drain({"b": b}, {str(i) for i in range(N, N + M)}, 60)
again = [v for v in seen2 if int(v) < N]
if again:
    fail(f"{len(again)} committed messages delivered again after a left, e.g. {again[:5]}")
if not {str(i) for i in range(N, N + M)} <= set(seen2):
    fail("b did not consume what was produced after a left")
if b[1] != set(range(partitions)):
    fail(f"after a left, b owns {sorted(b[1])}")

tps = [TopicPartition(topic, p) for p in range(partitions)]
committed = b[0].committed(tps, timeout=20)
for tp in committed:
    low, high = b[0].get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
    if tp.offset != high:
        fail(f"partition {tp.partition}: committed {tp.offset}, end {high}")
print("committed:", [tp.offset for tp in committed])
b[0].close()

desc = admin.describe_consumer_groups([group])[group].result(timeout=20)
if str(desc.state) != "ConsumerGroupState.EMPTY":
    fail(f"after both left: {desc.state}")
offsets = admin.list_consumer_group_offsets(
    [__import__("confluent_kafka").ConsumerGroupTopicPartitions(group)])[group].result(timeout=20)
if sorted(tp.offset for tp in offsets.topic_partitions) != sorted(tp.offset for tp in committed):
    fail(f"list_consumer_group_offsets: {offsets.topic_partitions}")
admin.delete_consumer_groups([group])[group].result(timeout=20)
listed = admin.list_consumer_groups().result(timeout=20)
if group in [g.group_id for g in listed.valid]:
    fail("the group is still listed after delete_consumer_groups")
print("OK")
