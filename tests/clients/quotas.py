"""Client quotas with confluent-kafka, for tests/quotas.rs.

  quotas.py produce BOOTSTRAP CLIENT_ID SECONDS
      produces 1000-byte values as fast as the producer may for SECONDS; prints
      "bytes B seconds S throttled N" (B: value bytes acknowledged within the
      time; N: the throttle events the broker's throttle_time_ms caused).
  quotas.py consume BOOTSTRAP CLIENT_ID SECONDS
      reads the topic from the beginning for SECONDS; prints "bytes B seconds S".
"""

import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer

TOPIC = "events"


def produce(bootstrap, client_id, seconds):
    throttled = []
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "linger.ms": 5,
            "batch.size": 65536,
            "throttle_cb": throttled.append,
        }
    )
    started = time.monotonic()
    deadline = started + seconds
    acked = [0]

    def done(err, msg):
        if err is None and time.monotonic() <= deadline:
            acked[0] += len(msg.value())

    value = b"v" * 1000
    while time.monotonic() < deadline:
        try:
            producer.produce(TOPIC, value, on_delivery=done)
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
    # What is still queued is past the time measured: dropped, not waited for.
    producer.purge(in_queue=True, in_flight=False)
    producer.flush(30)
    print(f"bytes {acked[0]} seconds {seconds} throttled {len(throttled)}")


def consume(bootstrap, client_id, seconds):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "group.id": f"quota-{client_id}",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 65536,
            "message.max.bytes": 65536,
            "max.partition.fetch.bytes": 65536,
        }
    )
    consumer.subscribe([TOPIC])
    got = 0
    started = None
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        m = consumer.poll(0.1)
        if m is None or m.error():
            if m is not None and m.error().code() != KafkaError._PARTITION_EOF:
                sys.exit(f"consume: {m.error()}")
            if started is None:
                continue
        else:
            if started is None:
                # The clock starts at the first message: joining the group is not
                # the quota's.
                started = time.monotonic()
                deadline = started + seconds
            got += len(m.value())
    consumer.close()
    print(f"bytes {got} seconds {seconds}")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "produce":
        produce(args[0], args[1], float(args[2]))
    elif what == "consume":
        consume(args[0], args[1], float(args[2]))
    else:
        sys.exit(f"unknown command {what}")
