"""kafka-python: produce with acks=all and a compression codec, consume from offset 0.

Usage: kafka_python_roundtrip.py BOOTSTRAP TOPIC CODEC COUNT
Exits 0 when every message comes back byte-identical, 1 otherwise (says why).
"""
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

bootstrap, topic, codec, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
codec = None if codec == "none" else codec

producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    acks="all",
    compression_type=codec,
    linger_ms=5,
    batch_size=64 * 1024,
)
sent = {}
futures = []
for i in range(count):
    key = f"{codec}-key-{i}".encode()
    value = (f"{codec} value {i} " + "z" * (i % 300)).encode()
    sent[key] = value
    futures.append(producer.send(topic, key=key, value=value))
producer.flush()
for f in futures:
    f.get(timeout=30)
producer.close()

consumer = KafkaConsumer(
    bootstrap_servers=bootstrap,
    enable_auto_commit=False,
    consumer_timeout_ms=5000,
)
parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
consumer.assign(parts)
consumer.seek_to_beginning(*parts)
got = {}
for msg in consumer:
    if msg.key in sent:
        got[msg.key] = msg.value
    if len(got) == len(sent):
        break
consumer.close()

missing = [k for k in sent if got.get(k) != sent[k]]
if missing:
    print(f"{len(missing)} of {len(sent)} messages missing or changed, e.g. {missing[:3]}")
    sys.exit(1)
print(f"ok: {len(sent)} messages with {codec} round-tripped")
