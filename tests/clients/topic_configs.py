"""Topic configs through the admin clients tools use: confluent-kafka's AdminClient
(create_topics with configs, describe_configs for a topic and a broker,
alter_configs, incremental_alter_configs, describe_cluster) and kafka-python's
KafkaAdminClient (describe_configs, create_topics with topic_configs).

usage: topic_configs.py BROKER
Exits non-zero with the reason when anything is not as Kafka would do it."""

import sys

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic)

broker = sys.argv[1]


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


admin = AdminClient({"bootstrap.servers": broker})


def topic_configs(name):
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    got = admin.describe_configs([res])[res].result(timeout=20)
    return {k: (v.value, v.source) for k, v in got.items()}


# CreateTopics with configs, as Terraform providers and UIs send them.
f = admin.create_topics([NewTopic("configured", 2, 1, config={
    "retention.ms": "3600000", "max.message.bytes": "2000", "cleanup.policy": "delete"})])
f["configured"].result(timeout=30)
c = topic_configs("configured")
DYNAMIC_TOPIC, DEFAULT = 1, 5
if c["retention.ms"] != ("3600000", DYNAMIC_TOPIC) or c["max.message.bytes"][0] != "2000":
    fail(f"described after create: {c}")
if c["retention.bytes"] != ("-1", DEFAULT):
    fail(f"retention.bytes: {c['retention.bytes']}")

# A config this server does not serve, and compaction: refused, nothing made.
for bad in [{"min.compaction.lag.ms": "1"}, {"cleanup.policy": "compact"}]:
    f = admin.create_topics([NewTopic("refused", 1, 1, config=bad)])
    try:
        f["refused"].result(timeout=30)
        fail(f"{bad} was accepted")
    except KafkaException as e:
        if e.args[0].code() != 40:  # INVALID_CONFIG
            fail(f"{bad}: {e}")

# max.message.bytes is in force: a larger batch is refused with MESSAGE_TOO_LARGE.
p = Producer({"bootstrap.servers": broker, "batch.size": 100000, "linger.ms": 50,
              "message.timeout.ms": 10000})
errors = []
p.produce("configured", b"x" * 5000, on_delivery=lambda e, m: errors.append(e))
p.flush(20)
if not errors or errors[0] is None or "too large" not in str(errors[0]).lower():
    fail(f"a 5000-byte record to a 2000-byte topic: {errors}")

# AlterConfigs replaces the topic's own configs; IncrementalAlterConfigs edits one.
res = ConfigResource(ConfigResource.Type.TOPIC, "configured", set_config={"retention.bytes": "1048576"})
admin.alter_configs([res])[res].result(timeout=20)
c = topic_configs("configured")
if c["retention.bytes"] != ("1048576", DYNAMIC_TOPIC) or c["retention.ms"][1] != DEFAULT:
    fail(f"after alter_configs: {c}")
res = ConfigResource(ConfigResource.Type.TOPIC, "configured", incremental_configs=[
    ConfigEntry("segment.bytes", "8388608", incremental_operation=AlterConfigOpType.SET)])
admin.incremental_alter_configs([res])[res].result(timeout=20)
c = topic_configs("configured")
if c["segment.bytes"] != ("8388608", DYNAMIC_TOPIC) or c["retention.bytes"][0] != "1048576":
    fail(f"after incremental_alter_configs: {c}")
res = ConfigResource(ConfigResource.Type.TOPIC, "configured", incremental_configs=[
    ConfigEntry("retention.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
admin.incremental_alter_configs([res])[res].result(timeout=20)
if topic_configs("configured")["retention.bytes"] != ("-1", DEFAULT):
    fail("DELETE did not return retention.bytes to the server's")
res = ConfigResource(ConfigResource.Type.TOPIC, "configured", set_config={"segment.bytes": "12"})
try:
    admin.alter_configs([res])[res].result(timeout=20)
    fail("segment.bytes=12 accepted")
except KafkaException as e:
    if e.args[0].code() != 40:
        fail(f"segment.bytes=12: {e}")

# The broker's settings: described, read-only.
res = ConfigResource(ConfigResource.Type.BROKER, "0")
b = admin.describe_configs([res])[res].result(timeout=20)
if b["offsets.topic.num.partitions"].value != "16" or not b["log.segment.bytes"].is_read_only:
    fail(f"broker configs: {b}")
cluster = admin.describe_cluster().result(timeout=20)
if cluster.cluster_id != "tidewater" or not cluster.nodes:
    fail(f"describe_cluster: {cluster}")

# kafka-python's admin client.
from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.admin import NewTopic as KNewTopic

k = KafkaAdminClient(bootstrap_servers=broker)
k.create_topics([KNewTopic("from-kafka-python", 1, 1, topic_configs={"retention.ms": "60000"})])
got = k.describe_configs([KConfigResource(ConfigResourceType.TOPIC, "from-kafka-python")])
text = str(got)
if "retention.ms" not in text or "60000" not in text:
    fail(f"kafka-python describe_configs: {text[:500]}")
k.close()
print("OK")
