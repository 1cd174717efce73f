"""confluent-kafka (bundled librdkafka) with enable.idempotence=true and retries:
produce COUNT messages, consume from offset 0, expect each exactly once.

Usage: confluent_idempotent.py BOOTSTRAP TOPIC COUNT
"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
errors = []
producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "retries": 10,
    "linger.ms": 5,
})
for i in range(count):
    producer.produce(topic, key=f"k{i}", value=f"v{i}",
                     on_delivery=lambda err, msg: err and errors.append(err))
    producer.poll(0)
producer.flush(30)
if errors:
    print(f"delivery errors: {errors[:3]}")
    sys.exit(1)

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                     "enable.auto.commit": False})
meta = consumer.list_topics(topic, timeout=10)
parts = [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
consumer.assign(parts)
seen = {}
idle = 0
while len(seen) < count and idle < 20:
    msg = consumer.poll(0.5)
    if msg is None:
        idle += 1
        continue
    if msg.error():
        continue
    k = msg.key().decode()
    seen[k] = seen.get(k, 0) + 1
consumer.close()
dups = [k for k, n in seen.items() if n > 1]
missing = count - len(seen)
if dups or missing:
    print(f"{missing} missing, {len(dups)} duplicated (e.g. {dups[:3]})")
    sys.exit(1)
print(f"ok: {count} messages exactly once")
