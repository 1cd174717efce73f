"""The reference job checked against an independent computation.

Produces reference sensor events (Avro via fastavro) with kafka-python, keyed by
device_id or unkeyed (random partitions, so records cross cores), with bounded
disorder, malformed records mixed in, and late events once their windows fired.
Then reads every result — output topic, ClickHouse (FINAL), JSON-lines files, the
late and dead-letter topics — and compares each row with aggregates computed here.

Usage:
  pipeline.py produce STATE --bootstrap B --schema AVSC [--unkeyed] [--confluent V1AVSC]
              [--events N] [--devices D] [--seed S] [--start-window W] [--windows K]
  pipeline.py late STATE --bootstrap B --schema AVSC [--count N]
  pipeline.py verify STATE --bootstrap B [--clickhouse URL --table T] [--files DIR]
              [--timeout SECS]

STATE is a JSON file the steps share: every event produced and what it should do.
"""
import argparse
import glob
import io
import json
import os
import random
import sys
import time
import urllib.request

import fastavro
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

WINDOW_MS = 60_000
OOO_MS = 5_000
JOB = "device_minute"
SOURCE = "iot-sensor-data"
BASE_MS = 1_700_000_040_000  # a minute boundary


def load_schema(path):
    with open(path) as f:
        return fastavro.parse_schema(json.load(f))


def encode(schema, record, confluent_id=None):
    buf = io.BytesIO()
    if confluent_id is not None:
        buf.write(b"\x00" + confluent_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def event(rng, device, ts):
    return {
        "device_id": f"device-{device:06d}",
        "sensor_type": device % 8,
        "timestamp": ts,
        "temperature": round(rng.uniform(-10.0, 40.0), 3),
        "humidity": rng.uniform(0.0, 100.0),
        "pressure": rng.uniform(950.0, 1050.0),
        "battery_level": rng.uniform(0.0, 100.0),
        "status": rng.randrange(4),
        "latitude": 48.1,
        "longitude": 11.5,
        "firmware": "1.2.3",
        "metadata": bytes(rng.randrange(256) for _ in range(40)),
    }


def producer(bootstrap):
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         retries=5, max_in_flight_requests_per_connection=1)


def cmd_produce(a):
    rng = random.Random(a.seed)
    schema = load_schema(a.schema)
    v1 = load_schema(a.confluent) if a.confluent else None
    p = producer(a.bootstrap)
    state = {"events": [], "bad": 0, "late": 0}
    if os.path.exists(a.state):
        with open(a.state) as f:
            state = json.load(f)
    start = BASE_MS + a.start_window * WINDOW_MS
    span = a.windows * WINDOW_MS
    futures = []
    for i in range(a.events):
        # Event time moves forward with disorder under the out-of-orderness bound.
        base = start + span * i // a.events
        ts = max(start, base - rng.randrange(3_000))
        device = rng.randrange(a.devices)
        e = event(rng, device, ts)
        if v1 is not None and i % 2 == 0:
            # The older writer: float temperature, int pressure, no battery_level.
            old = {k: v for k, v in e.items() if k != "battery_level"}
            old["temperature"] = float(e["temperature"])  # exact in float? rounded below
            old["pressure"] = int(e["pressure"])
            e["pressure"] = float(old["pressure"])
            # float32 round trip: the reader sees the float widened to double.
            import struct
            e["temperature"] = struct.unpack("<f", struct.pack("<f", e["temperature"]))[0]
            old["temperature"] = e["temperature"]
            value = encode(v1, old, confluent_id=1)
        elif v1 is not None:
            value = encode(schema, e, confluent_id=2)
        else:
            value = encode(schema, e)
        key = None if a.unkeyed else e["device_id"].encode()
        futures.append(p.send(SOURCE, key=key, value=value, timestamp_ms=ts))
        state["events"].append({k: e[k] for k in ("device_id", "timestamp", "temperature", "humidity", "pressure")})
        if i % 997 == 0:
            # Malformed records between the good ones: garbage, a cut datum, nothing.
            for bad in (b"\xff\xfe\xfd", value[: len(value) // 3], b""):
                futures.append(p.send(SOURCE, key=key, value=bad, timestamp_ms=ts))
                state["bad"] += 1
            # Event times that cannot be true: the year 2100 (sent now), and 1969.
            # Dead letters; taken in, they would make every later event late.
            if v1 is None:
                for wrong in (4_102_444_800_000, -5):
                    value_wrong = encode(schema, event(rng, device, wrong))
                    futures.append(p.send(SOURCE, key=key, value=value_wrong, timestamp_ms=ts))
                    state["bad"] += 1
    p.flush(60)
    for f in futures:
        f.get(timeout=30)
    p.close()
    with open(a.state, "w") as f:
        json.dump(state, f)
    print(f"produced {a.events} events and {state['bad']} malformed records")


def cmd_late(a):
    rng = random.Random(7)
    schema = load_schema(a.schema)
    with open(a.state) as f:
        state = json.load(f)
    p = producer(a.bootstrap)
    first = min(e["timestamp"] for e in state["events"])
    for i in range(a.count):
        e = event(rng, i, first + i)  # the first window fired long ago
        p.send(SOURCE, key=e["device_id"].encode(), value=encode(schema, e)).get(timeout=30)
        state["late"] += 1
    p.close()
    with open(a.state, "w") as f:
        json.dump(state, f)
    print(f"produced {a.count} late events")


def expected(state):
    """Rows of every window the final watermark fires: (device, window_start) -> row."""
    events = state["events"]
    wm = max(e["timestamp"] for e in events) - OOO_MS
    rows = {}
    for e in events:
        start = e["timestamp"] // WINDOW_MS * WINDOW_MS
        if start + WINDOW_MS > wm:
            continue
        r = rows.setdefault((e["device_id"], start), {"n": 0, "tmin": None, "tmax": None, "tsum": 0.0, "hsum": 0.0, "psum": 0.0})
        r["n"] += 1
        t = e["temperature"]
        r["tmin"] = t if r["tmin"] is None else min(r["tmin"], t)
        r["tmax"] = t if r["tmax"] is None else max(r["tmax"], t)
        r["tsum"] += t
        r["hsum"] += e["humidity"]
        r["psum"] += e["pressure"]
    return rows


def close(a, b):
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def compare(name, want, got):
    """got: (device, window_start) -> output row dict. Returns a list of problems."""
    problems = []
    if len(got) != len(want):
        problems.append(f"{name}: {len(got)} rows, want {len(want)}")
    for k, w in want.items():
        g = got.get(k)
        if g is None:
            problems.append(f"{name}: missing row {k}")
            continue
        if int(g["window_end"]) != k[1] + WINDOW_MS:
            problems.append(f"{name}: {k} window_end {g['window_end']}")
        checks = [
            ("events", int(g["events"]) == w["n"]),
            ("temperature_min", g["temperature_min"] == w["tmin"]),
            ("temperature_max", g["temperature_max"] == w["tmax"]),
            ("temperature_avg", close(g["temperature_avg"], w["tsum"] / w["n"])),
            ("humidity_avg", close(g["humidity_avg"], w["hsum"] / w["n"])),
            ("pressure_sum", close(g["pressure_sum"], w["psum"])),
        ]
        for col, ok in checks:
            if not ok:
                problems.append(f"{name}: {k} {col} = {g[col]}, want {w}")
    for k in got:
        if k not in want:
            problems.append(f"{name}: unexpected row {k}")
    return problems[:20]


def read_topic(bootstrap, topic, with_headers=False):
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=1500)
    parts = c.partitions_for_topic(topic) or set()
    c.assign([TopicPartition(topic, p) for p in parts])
    c.seek_to_beginning()
    out = [(m.key, m.value, dict(m.headers or [])) for m in c]
    c.close()
    return out


def rows_by_key(rows):
    got = {}
    dups = 0
    for r in rows:
        k = (r["device_id"], int(r["window_start"]))
        dups += k in got
        got[k] = r
    return got, dups


def clickhouse_rows(url, table):
    q = f"SELECT * FROM {table} FINAL FORMAT JSONEachRow"
    try:
        with urllib.request.urlopen(url + "/?query=" + urllib.parse.quote(q), timeout=10) as r:
            return [json.loads(l) for l in r.read().decode().splitlines() if l.strip()]
    except Exception as e:  # not created yet, or down
        return [{"error": str(e)}]


def check_metrics(url, state, rows):
    """The server's own counters agree with what was sent and what came out."""
    from prometheus_client.parser import text_string_to_metric_families
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
    except Exception as e:
        return [f"metrics: cannot scrape {url}: {e}"]
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))

    def total(name, **match):
        return sum(v for l, v in samples.get(name, []) if all(l.get(k) == w for k, w in match.items()))

    sent = len(state["events"]) + state["bad"] + state["late"]
    problems = []
    for name, got, want in [
        ("records_in_total", total("tidewater_records_in_total", topic=SOURCE), sent),
        ("pipeline_records_total", total("tidewater_pipeline_records_total", job_name=JOB), sent),
        ("late_events_total", total("tidewater_late_events_total", job_name=JOB), state["late"]),
        ("dlq_records_total", total("tidewater_dlq_records_total", job_name=JOB), state["bad"]),
        ("sink_rows_total (topic)", total("tidewater_sink_rows_total", sink=f"topic:{JOB}"), rows),
    ]:
        if got != want:
            problems.append(f"metrics: {name} = {got}, want {want}")
    for name, match in [("tidewater_kafka_request_seconds_count", {"api": "produce"}),
                        ("tidewater_journal_syncs_total", {}),
                        ("tidewater_journal_write_seconds_count", {}),
                        ("tidewater_journal_group_commit_appends_count", {}),
                        ("tidewater_windows_fired_total", {"job_name": JOB}),
                        ("tidewater_sink_fire_latency_seconds_count", {"job_name": JOB}),
                        ("tidewater_busy_seconds_total", {})]:
        if total(name, **match) <= 0:
            problems.append(f"metrics: {name} did not move")
    return problems


def cmd_verify(a):
    with open(a.state) as f:
        state = json.load(f)
    want = expected(state)
    deadline = time.time() + a.timeout
    while True:
        problems = []
        topic_rows = [json.loads(v) for _, v, _ in read_topic(a.bootstrap, JOB)]
        got, dups = rows_by_key(topic_rows)
        if dups:
            problems.append(f"topic: {dups} duplicated rows")
        problems += compare("topic", want, got)
        if a.clickhouse:
            ch = clickhouse_rows(a.clickhouse, a.table)
            if ch and "error" in ch[0]:
                problems.append(f"clickhouse: {ch[0]['error']}")
            else:
                got, dups = rows_by_key(ch)
                if dups:
                    problems.append(f"clickhouse: {dups} duplicated rows after FINAL")
                problems += compare("clickhouse", want, got)
        if a.files:
            lines = []
            for path in sorted(glob.glob(os.path.join(a.files, "*.shard-*"))):
                with open(path) as f:
                    lines += [json.loads(l) for l in f if l.strip()]
            got, dups = rows_by_key(lines)
            if dups:
                problems.append(f"files: {dups} duplicated rows")
            problems += compare("files", want, got)
        late = read_topic(a.bootstrap, f"{JOB}.late")
        if len(late) != state["late"]:
            problems.append(f"late: {len(late)} records, want {state['late']}")
        dlq = read_topic(a.bootstrap, f"{JOB}.dlq")
        if len(dlq) != state["bad"]:
            problems.append(f"dlq: {len(dlq)} records, want {state['bad']}")
        elif any(b"tidewater.error" not in {k.encode() if isinstance(k, str) else k for k in h} for _, _, h in dlq):
            problems.append("dlq: a record without its tidewater.error header")
        if not problems and a.metrics:
            problems += check_metrics(a.metrics, state, len(want))
        if not problems:
            print(f"ok: {len(want)} rows match in every sink; {state['late']} late, {state['bad']} dead letters")
            return 0
        if time.time() > deadline:
            print("\n".join(problems))
            return 1
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=["produce", "late", "verify"])
    ap.add_argument("state")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--schema")
    ap.add_argument("--confluent")
    ap.add_argument("--unkeyed", action="store_true")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start-window", type=int, default=0)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--count", type=int, default=25)
    ap.add_argument("--clickhouse")
    ap.add_argument("--table", default="iot.device_minute")
    ap.add_argument("--files")
    ap.add_argument("--metrics")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    if a.step == "produce":
        cmd_produce(a)
    elif a.step == "late":
        cmd_late(a)
    else:
        sys.exit(cmd_verify(a))


if __name__ == "__main__":
    main()
