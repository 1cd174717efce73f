"""kafka-python's admin client against DeleteTopics: a topic made at run time is
deleted with its records, stays deleted, comes back empty when created again; a
second deletion says it is unknown, and a topic the config declares is refused.
With the admin address, the topic's metric series go with it and start from zero
when it is made again.

Usage: delete_topics.py BOOTSTRAP TOPIC DECLARED_TOPIC [ADMIN_HOST:PORT]
"""
import sys
import urllib.request

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import PolicyViolationError, UnknownTopicOrPartitionError

bootstrap, topic, declared = sys.argv[1], sys.argv[2], sys.argv[3]
admin_addr = sys.argv[4] if len(sys.argv) > 4 else None
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
problems = []


def expect_error(name, error, what):
    try:
        admin.delete_topics([name])
        problems.append(f"{what}: accepted")
    except error:
        pass
    except Exception as e:  # noqa: BLE001 - report anything else
        problems.append(f"{what}: {type(e).__name__}: {e}")


def produce(n):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(n):
        p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    p.flush(30)
    p.close()


def topic_series():
    """The metric lines of the topic, from every core."""
    if admin_addr is None:
        return []
    with urllib.request.urlopen(f"http://{admin_addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    return [l for l in text.splitlines() if f'topic="{topic}"' in l]


def read_all():
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    parts = c.partitions_for_topic(topic) or set()
    c.assign([TopicPartition(topic, p) for p in parts])
    got = sorted(m.value.decode() for m in c)
    c.close()
    return len(parts), got


admin.create_topics([NewTopic(topic, 5, 1)])
produce(300)
admin.delete_topics([topic])
if topic in admin.list_topics():
    problems.append(f"still listed after deletion: {admin.list_topics()}")
if topic_series():
    problems.append(f"metric series left after deletion: {topic_series()[:3]}")
expect_error(topic, UnknownTopicOrPartitionError, "second deletion")
expect_error(declared, PolicyViolationError, "deleting a declared topic")
if declared not in admin.list_topics():
    problems.append(f"the declared topic went: {admin.list_topics()}")
# Created again: new partitions, none of the old records.
admin.create_topics([NewTopic(topic, 3, 1)])
produce(10)
parts, got = read_all()
if parts != 3 or got != sorted(f"v{i}" for i in range(10)):
    problems.append(f"after re-creation: {parts} partitions, records {got[:5]}... ({len(got)})")
if admin_addr is not None:
    records_in = sum(float(l.rsplit(" ", 1)[1]) for l in topic_series()
                     if l.startswith("tidewater_records_in_total"))
    if records_in != 10:
        problems.append(f"records_in_total after re-creation: {records_in}, not 10")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"ok: {topic} deleted and made again")
