"""Confluent's own clients against Tidewater's schema registry, and a running
avro-confluent job reading what they write.

usage: schema_registry.py BROKER REGISTRY_URL TOPIC OUT_DIRS STATE_FILE (produce|after-restart)

OUT_DIRS: the file sinks' directories, comma-separated: each job's rows are checked.

produce: AvroSerializer auto-registers v1, v2 (a field added with a default) and v3
  (a field removed) of the subject TOPIC-value while the job runs; records of all
  three are produced, then one framed with an id nobody registered. The job's
  file-sink rows are compared with counts and sums computed here. An incompatible
  v4 is refused with 409; bad requests get Confluent's errors. The ids, versions
  and a subject-level compatibility are written to STATE_FILE.
after-restart: the registry (after kill -9) still has them, unchanged; records
  written with v3 by a fresh serializer (which looks its schema up again) are
  read by the job as before.
Exits non-zero with the reason when anything is not as expected."""

import glob
import json
import sys
import time
import urllib.error
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

broker, registry, topic, out_dirs, state_file, phase = sys.argv[1:7]
SUBJECT = topic + "-value"
WINDOW = 60_000
BASE = 1_700_000_000_000 if phase == "produce" else 1_700_000_000_000 + 30 * WINDOW


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def record_schema(fields):
    return json.dumps({"type": "record", "name": "Reading", "namespace": "iot", "fields": fields})


DEVICE = {"name": "device_id", "type": "string"}
TS = {"name": "ts", "type": "long"}
PRESSURE = {"name": "pressure", "type": "int"}
TEMPERATURE = {"name": "temperature", "type": "double"}
HUMIDITY = {"name": "humidity", "type": "double", "default": 0.0}
FIRMWARE = {"name": "firmware", "type": "string", "default": "1.0"}
V1 = record_schema([DEVICE, TS, TEMPERATURE, PRESSURE])
V2 = record_schema([DEVICE, TS, TEMPERATURE, PRESSURE, HUMIDITY, FIRMWARE])
V3 = record_schema([DEVICE, TS, PRESSURE, HUMIDITY, FIRMWARE])
# ts as a string: nothing written with v3 could be read with it.
V4 = record_schema([DEVICE, {"name": "ts", "type": "string"}, PRESSURE, HUMIDITY, FIRMWARE])

client = SchemaRegistryClient({"url": registry})
ctx = SerializationContext(topic, MessageField.VALUE)


def serializer(schema):
    return AvroSerializer(client, schema, conf={"auto.register.schemas": True})


def http(method, path, body=None):
    """(status, parsed JSON body) of one raw request."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(registry + path, data=data, method=method)
    req.add_header("Content-Type", "application/vnd.schemaregistry.v1+json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def expect_error(what, got, status, code):
    if got[0] != status or got[1].get("error_code") != code:
        fail(f"{what}: wanted {status} with error_code {code}, got {got}")


def produce(records, expected):
    """Produces (serializer, record) pairs; adds each to expected[(device, window)]:
    count, sum of temperature (None: never seen), sum of humidity, max pressure."""
    p = Producer({"bootstrap.servers": broker, "acks": "all", "linger.ms": 5})
    for ser, r in records:
        p.produce(topic, key=r["device_id"].encode(), value=ser(r, ctx))
        key = (r["device_id"], (r["ts"] // WINDOW) * WINDOW)
        count, temp, hum, pres = expected.get(key, (0, None, 0.0, None))
        if "temperature" in r:
            temp = (temp or 0.0) + r["temperature"]
        hum += r.get("humidity", 0.0)  # the reader's default for v1 records
        pres = r["pressure"] if pres is None else max(pres, r["pressure"])
        expected[key] = (count + 1, temp, hum, pres)
    return p


def readings(versions, n, start=BASE):
    """n records, one every 500 ms of event time from start, cycling through the
    versions."""
    out = []
    for i in range(n):
        ver, ser = versions[i % len(versions)]
        r = {"device_id": "dev-%d" % (i % 6), "ts": start + i * 500, "pressure": 1000 + i % 17}
        if ver in (1, 2):
            r["temperature"] = float(i % 11) + 0.25
        if ver in (2, 3):
            r["humidity"] = float(i % 7) + 0.5
            r["firmware"] = "2.%d" % ver
        out.append((ser, r))
    return out


def rows_match(expected):
    """Every job's rows (one file-sink directory each) are the expected ones."""
    return min(rows_match_in(d, expected) for d in out_dirs.split(","))


def rows_match_in(out_dir, expected):
    deadline = time.time() + 90
    rows = {}
    while time.time() < deadline:
        rows = {}
        for path in glob.glob(out_dir + "/*"):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    key = (r["device_id"], r["window_start"])
                    if key in expected:
                        rows[key] = (r["events"], r["temperature_sum"], r["humidity_sum"], r["pressure_max"])
        if len(rows) >= len(expected):
            break
        time.sleep(0.2)
    if rows != expected:
        missing = [k for k in expected if k not in rows][:5]
        wrong = [(k, rows[k], expected[k]) for k in expected if k in rows and rows[k] != expected[k]][:5]
        fail(f"{out_dir}: {len(rows)} rows for {len(expected)} windows; missing {missing}; wrong {wrong}")
    return len(rows)


def far_ahead(p, ser, record):
    """One record far ahead in event time: its watermark closes every window above."""
    p.produce(topic, key=b"dev-0", value=ser(record, ctx))


if phase == "produce":
    s1, s2, s3 = serializer(V1), serializer(V2), serializer(V3)
    expected = {}
    # v1 alone first, so v2 and v3 are registered while the job already reads.
    p = produce(readings([(1, s1)], 60), expected)
    p.flush(30)
    p = produce(readings([(1, s1), (2, s2), (3, s3)], 540, start=BASE + 60 * 500), expected)
    far_ahead(p, s3, {"device_id": "dev-0", "ts": BASE + 20 * WINDOW, "pressure": 1, "humidity": 0.0, "firmware": "x"})
    # An id nobody registered: a dead letter, not a crash and not a skipped record.
    p.produce(topic, key=b"dev-0", value=b"\x00\x00\x00\x03\xe7" + b"\x02x")
    p.flush(30)
    windows = rows_match(expected)
    ids = {}
    for v, text in ((1, V1), (2, V2), (3, V3)):
        found = client.lookup_schema(SUBJECT, Schema(text, "AVRO"))
        if found.version != v:
            fail(f"v{v} is version {found.version}")
        ids[v] = found.schema_id
    if len(set(ids.values())) != 3:
        fail(f"three schemas, three ids: {ids}")
    # Incompatible: refused as Confluent refuses it.
    try:
        client.register_schema(SUBJECT, Schema(V4, "AVRO"))
        fail("v4 was registered")
    except SchemaRegistryError as e:
        if e.http_status_code != 409 or e.error_code != 409:
            fail(f"v4: {e.http_status_code} {e.error_code} {e}")
    if client.test_compatibility(SUBJECT, Schema(V4, "AVRO")):
        fail("v4 tested compatible")
    # A schema that takes a type from another subject (a schema reference).
    location = json.dumps({"type": "record", "name": "Location", "namespace": "geo", "fields": [{"name": "lat", "type": "double"}]})
    client.register_schema("geo-location", Schema(location, "AVRO"))
    placed = record_schema([DEVICE, {"name": "at", "type": "geo.Location"}])
    ref = SchemaReference("geo.Location", "geo-location", 1)
    placed_id = client.register_schema("placed-value", Schema(placed, "AVRO", references=[ref]))
    got = client.get_latest_version("placed-value")
    if got.schema_id != placed_id or [r.subject for r in got.schema.references] != ["geo-location"]:
        fail(f"the referencing schema came back as {got}")
    expect_error("a referenced version", http("DELETE", "/subjects/geo-location/versions/1"), 422, 42206)
    client.set_compatibility(subject_name="other-value", level="FULL_TRANSITIVE")
    client.register_schema("other-value", Schema(V1, "AVRO"))
    # Bad requests: Confluent's errors, and the registry keeps answering.
    expect_error("invalid schema", http("POST", f"/subjects/{SUBJECT}/versions", {"schema": '{"type": "record"'}), 422, 42201)
    bad_name = record_schema([DEVICE]).replace('"Reading"', '"my-reading"')
    expect_error("a name Avro forbids", http("POST", f"/subjects/{SUBJECT}/versions", {"schema": bad_name}), 422, 42201)
    expect_error("not Avro", http("POST", f"/subjects/{SUBJECT}/versions", {"schema": '{"type": "nope"}'}), 422, 42201)
    expect_error("JSON Schema", http("POST", f"/subjects/{SUBJECT}/versions", {"schema": "{}", "schemaType": "JSON"}), 422, 42201)
    expect_error("unknown subject", http("GET", "/subjects/nobody/versions"), 404, 40401)
    expect_error("unknown version", http("GET", f"/subjects/{SUBJECT}/versions/77"), 404, 40402)
    expect_error("unknown id", http("GET", "/schemas/ids/4242"), 404, 40403)
    big = json.dumps({"schema": record_schema([DEVICE]) + " " * (10 << 20)}).encode()
    expect_error("10 MB schema", http("POST", f"/subjects/{SUBJECT}/versions", big), 413, 413)
    expect_error("not JSON", http("POST", f"/subjects/{SUBJECT}/versions", b"{{{"), 400, 400)
    if http("GET", "/subjects")[1] != sorted(["geo-location", "other-value", "placed-value", SUBJECT]):
        fail("subjects after the bad requests: %s" % (http("GET", "/subjects"),))
    with open(state_file, "w") as f:
        json.dump({"ids": ids, "subjects": http("GET", "/subjects")[1]}, f)
    print("OK", windows, "windows, ids", ids)
else:
    with open(state_file) as f:
        before = json.load(f)
    if http("GET", "/subjects")[1] != sorted(before["subjects"] + ["readings-reader"]):
        fail("subjects changed: %s" % (http("GET", "/subjects"),))
    if http("GET", f"/subjects/{SUBJECT}/versions")[1] != [1, 2, 3]:
        fail("versions: %s" % (http("GET", f"/subjects/{SUBJECT}/versions"),))
    for v, id in before["ids"].items():
        status, got = http("GET", f"/subjects/{SUBJECT}/versions/{v}")
        if status != 200 or got["id"] != id:
            fail(f"v{v}: {status} {got}, was id {id}")
    if http("GET", "/config/other-value")[1].get("compatibilityLevel") != "FULL_TRANSITIVE":
        fail("other-value's level: %s" % (http("GET", "/config/other-value"),))
    if http("GET", "/config")[1].get("compatibilityLevel") != "BACKWARD":
        fail("global level: %s" % (http("GET", "/config"),))
    # A fresh serializer registers v3 again: the same id, no new version.
    s3 = serializer(V3)
    expected = {}
    p = produce(readings([(3, s3)], 120), expected)
    far_ahead(p, s3, {"device_id": "dev-0", "ts": BASE + 20 * WINDOW, "pressure": 1, "humidity": 0.0, "firmware": "x"})
    p.flush(30)
    if http("GET", f"/subjects/{SUBJECT}/versions")[1] != [1, 2, 3]:
        fail("v3 again made a version: %s" % (http("GET", f"/subjects/{SUBJECT}/versions"),))
    print("OK", rows_match(expected), "windows after the restart")
