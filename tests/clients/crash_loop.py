"""Exactly-once under crashes: a producer that keeps going while the server is
killed and restarted, and the check at the end.

  crash_loop.py produce STATE --bootstrap B --schema AVSC --stop STOPFILE
      produces reference events (unique device_id + timestamp each) with acks=all and
      no retries until STOPFILE exists; records every acknowledged event in STATE.
  crash_loop.py verify STATE --bootstrap B --schema AVSC [--clickhouse URL] [--files DIR]
      reads the source topic back: every acknowledged event must be in it; then the
      window results (output topic, ClickHouse FINAL, files) must equal aggregates
      computed here over exactly the events in the log, none missing, none twice.
"""
import argparse
import io
import json
import os
import random
import sys
import time

import fastavro
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline  # noqa: E402  (the reference aggregation and the comparisons)

BASE_MS = pipeline.BASE_MS


def produce(a):
    schema = pipeline.load_schema(a.schema)
    rng = random.Random(5)
    acked = []
    p = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all", retries=0, linger_ms=5,
                      request_timeout_ms=3000, reconnect_backoff_ms=100,
                      reconnect_backoff_max_ms=500, max_block_ms=2000)
    i = 0
    pending = []
    last_write = time.time()
    while not os.path.exists(a.stop):
        # Event time: 3 ms per event, a little disorder (under the 5 s bound).
        ts = BASE_MS + i * 3 - rng.randrange(2000)
        e = pipeline.event(rng, i % 40, ts)
        e["timestamp"] = ts
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, e)
        ident = (e["device_id"], ts, e["temperature"], e["humidity"], e["pressure"])
        try:
            f = p.send(pipeline.SOURCE, key=e["device_id"].encode(), value=buf.getvalue(), timestamp_ms=ts)
            pending.append((f, ident))
        except Exception:  # noqa: BLE001 - the server is down: this event is not sent
            time.sleep(0.05)
        i += 1
        if len(pending) >= 200:
            try:
                p.flush(5)
            except Exception:  # noqa: BLE001
                pass
            for f, ident in pending:
                if f.is_done and f.succeeded():
                    acked.append(ident)
            pending = []
        if time.time() - last_write > 0.5:
            with open(a.state + ".tmp", "w") as out:
                json.dump(acked, out)
            os.replace(a.state + ".tmp", a.state)
            last_write = time.time()
    try:
        p.flush(10)
    except Exception:  # noqa: BLE001
        pass
    for f, ident in pending:
        if f.is_done and f.succeeded():
            acked.append(ident)
    with open(a.state, "w") as out:
        json.dump(acked, out)
    print(f"produced {i} events, {len(acked)} acknowledged")


def log_events(bootstrap, schema):
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    parts = c.partitions_for_topic(pipeline.SOURCE) or set()
    c.assign([TopicPartition(pipeline.SOURCE, p) for p in parts])
    c.seek_to_beginning()
    events = []
    for m in c:
        r = fastavro.schemaless_reader(io.BytesIO(m.value), schema)
        events.append({k: r[k] for k in ("device_id", "timestamp", "temperature", "humidity", "pressure")})
    c.close()
    return events


def verify(a):
    schema = pipeline.load_schema(a.schema)
    with open(a.state) as f:
        acked = [tuple(x) for x in json.load(f)]
    events = log_events(a.bootstrap, schema)
    in_log = {(e["device_id"], e["timestamp"], e["temperature"], e["humidity"], e["pressure"]) for e in events}
    lost = [x for x in acked if x not in in_log]
    if lost:
        print(f"{len(lost)} acknowledged events are not in the log, e.g. {lost[:3]}")
        return 1
    state = {"events": events, "bad": 0, "late": 0}
    want = pipeline.expected(state)
    deadline = time.time() + a.timeout
    while True:
        problems = []
        rows = [json.loads(v) for _, v, _ in pipeline.read_topic(a.bootstrap, pipeline.JOB)]
        got, dups = pipeline.rows_by_key(rows)
        if dups:
            problems.append(f"topic: {dups} rows written twice")
        problems += pipeline.compare("topic", want, got)
        if a.clickhouse:
            ch = pipeline.clickhouse_rows(a.clickhouse, a.table)
            if ch and "error" in ch[0]:
                problems.append(f"clickhouse: {ch[0]['error']}")
            else:
                got, dups = pipeline.rows_by_key(ch)
                if dups:
                    problems.append(f"clickhouse: {dups} duplicated rows after FINAL")
                problems += pipeline.compare("clickhouse", want, got)
        if a.files:
            lines = []
            for name in sorted(os.listdir(a.files)):
                with open(os.path.join(a.files, name)) as f:
                    lines += [json.loads(x) for x in f if x.strip()]
            got, dups = pipeline.rows_by_key(lines)
            if dups:
                problems.append(f"files: {dups} rows written twice")
            problems += pipeline.compare("files", want, got)
        for side in ("late", "dlq"):
            n = len(pipeline.read_topic(a.bootstrap, f"{pipeline.JOB}.{side}"))
            if n:
                problems.append(f"{side}: {n} records, want none")
        if not problems:
            print(f"ok: {len(acked)} acknowledged of {len(events)} events in the log, "
                  f"{len(want)} rows exactly once in every sink")
            return 0
        if time.time() > deadline:
            print("\n".join(problems[:20]))
            return 1
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["produce", "verify"])
    ap.add_argument("state")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--schema", required=True)
    ap.add_argument("--stop")
    ap.add_argument("--clickhouse")
    ap.add_argument("--table", default="iot.device_minute")
    ap.add_argument("--files")
    ap.add_argument("--timeout", type=float, default=90)
    a = ap.parse_args()
    if a.step == "produce":
        produce(a)
    else:
        sys.exit(verify(a))


if __name__ == "__main__":
    main()
