"""kafka-python's admin client against CreateTopics: a topic is created on every
core, a second creation says it exists, unsupported options get their error codes,
and the new topic takes and serves records.

Usage: create_topics.py BOOTSTRAP TOPIC PARTITIONS
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (InvalidReplicationFactorError, TopicAlreadyExistsError,
                          InvalidPartitionsError)

bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
problems = []


def expect_error(new, error, what):
    try:
        admin.create_topics([new])
        problems.append(f"{what}: accepted")
    except error:
        pass
    except Exception as e:  # noqa: BLE001 - report anything else
        problems.append(f"{what}: {type(e).__name__}: {e}")


admin.create_topics([NewTopic(topic, partitions, 1)])
expect_error(NewTopic(topic, partitions, 1), TopicAlreadyExistsError, "second creation")
expect_error(NewTopic(topic + "-r3", 2, 3), InvalidReplicationFactorError, "replication factor 3")
expect_error(NewTopic(topic + "-p0", 0, 1), InvalidPartitionsError, "0 partitions")
listed = admin.list_topics()
if topic not in listed or topic + "-r3" in listed:
    problems.append(f"list_topics: {listed}")

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
for i in range(300):
    producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
producer.flush(30)
consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="earliest", consumer_timeout_ms=3000)
parts = consumer.partitions_for_topic(topic) or set()
if len(parts) != partitions:
    problems.append(f"{len(parts)} partitions in metadata, want {partitions}")
consumer.assign([TopicPartition(topic, p) for p in parts])
seen = sorted(m.value.decode() for m in consumer)
if seen != sorted(f"v{i}" for i in range(300)):
    problems.append(f"read back {len(seen)} of 300 records")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"ok: {topic} created with {partitions} partitions and serving")
