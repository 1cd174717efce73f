"""JSON records as Python writes them, through a window job: json.dumps with its
defaults (\\u escapes for non-ASCII keys, spaces), event times as floats
(time.time()*1000 style) or as RFC 3339 strings. Then the job's file-sink rows are
compared with counts and sums computed here.

usage: json_job.py BROKER TOPIC OUT_DIR (epoch_ms|rfc3339)
Exits non-zero with the reason when anything is not as expected."""

import datetime
import glob
import json
import sys
import time

from kafka import KafkaProducer

broker, topic, out_dir, time_format = sys.argv[1:5]
BASE = 1_700_000_000_000  # a minute boundary (ms)
WINDOW = 60_000


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def when(ms):
    if time_format == "rfc3339":
        t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone(datetime.timedelta(hours=2)))
        return t.isoformat(timespec="milliseconds")
    return float(ms)  # json.dumps writes 1700000000000.0


devices = ["café-%d" % i for i in range(5)] + ['quote"d', "plain"]
expected = {}
p = KafkaProducer(bootstrap_servers=broker, acks="all")
n = 0
for i in range(600):
    device = devices[i % len(devices)]
    ms = BASE + i * 500  # 5 minutes of event time
    value = i % 13 + 0.5
    record = {"device_id": device, "ts": when(ms), "value": value, "note": "\u00b0C \\ path"}
    p.send(topic, json.dumps(record).encode())
    key = (device, (ms // WINDOW) * WINDOW)
    count, total = expected.get(key, (0, 0.0))
    expected[key] = (count + 1, total + value)
    n += 1
# Far ahead: moves the watermark past every window above.
p.send(topic, json.dumps({"device_id": "plain", "ts": when(BASE + 20 * WINDOW), "value": 0}).encode())
p.flush(30)

deadline = time.time() + 60
rows = {}
while time.time() < deadline:
    rows = {}
    for path in glob.glob(out_dir + "/*"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                rows[(r["device_id"], r["window_start"])] = (r["events"], r["value_sum"])
    if len(rows) >= len(expected):
        break
    time.sleep(0.2)
if rows != expected:
    missing = [k for k in expected if k not in rows][:5]
    wrong = [(k, rows[k], expected[k]) for k in expected if k in rows and rows[k] != expected[k]][:5]
    fail(f"{len(rows)} rows for {len(expected)} windows; missing {missing}; wrong {wrong}")
print("OK", len(rows), "windows,", n, "events")
