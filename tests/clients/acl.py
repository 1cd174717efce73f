"""Kafka's ACLs with confluent-kafka, for tests/acl.rs.

Users (SASL_PLAINTEXT, SCRAM-SHA-512, password = name + "-secret"): admin (a
super user), alice, bob, carol. Each step asserts what Kafka's broker would
answer and prints a line; "scenario done" ends a whole run.

  acl.py scenario SASL_BOOTSTRAP PLAIN_BOOTSTRAP
      ACLs made, listed and deleted by admin; produce, fetch (with and without a
      group), Metadata, CreateTopics, DeleteTopics, DescribeConfigs and CreateAcls
      allowed and refused as the ACLs say; a DENY wins and leaves again; an
      anonymous client on the PLAINTEXT listener gets nothing.
  acl.py after-restart SASL_BOOTSTRAP
      the ACLs are still there and still enforced.
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)


def config(bootstrap, user):
    if user is None:
        return {"bootstrap.servers": bootstrap}
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": f"{user}-secret",
    }


def admin(bootstrap, user):
    return AdminClient(config(bootstrap, user))


def acl(resource, name, principal, operation, permission="ALLOW", pattern="LITERAL", host="*"):
    return AclBinding(
        getattr(ResourceType, resource),
        name,
        getattr(ResourcePatternType, pattern),
        principal,
        host,
        getattr(AclOperation, operation),
        getattr(AclPermissionType, permission),
    )


def everything():
    return AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def denies_on_events(principal, host):
    """A filter of every DENY of `principal` (from `host`; None: any) on topic events."""
    return AclBindingFilter(
        ResourceType.TOPIC,
        "events",
        ResourcePatternType.LITERAL,
        principal,
        host,
        AclOperation.ANY,
        AclPermissionType.DENY,
    )


def create(admin_client, acls):
    for f in admin_client.create_acls(acls).values():
        f.result(timeout=15)


def delete(admin_client, acl_filter):
    """The ACLs the filter deleted."""
    return [b for f in admin_client.delete_acls([acl_filter]).values() for b in f.result(timeout=15)]


def produce(bootstrap, user, topic, value):
    """The delivery error's name, or "ok"."""
    conf = config(bootstrap, user)
    conf["message.timeout.ms"] = 10000
    p = Producer(conf)
    outcome = []
    p.produce(topic, value.encode(), on_delivery=lambda err, _m: outcome.append(err))
    p.flush(15)
    err = outcome[0] if outcome else "undelivered"
    return "ok" if err is None else (err.name() if hasattr(err, "name") else str(err))


def consume(bootstrap, user, topic, group):
    """What a group consumer reads in ~10 s, or the first error's name."""
    conf = config(bootstrap, user)
    conf.update({"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": True})
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    try:
        for _ in range(50):
            m = c.poll(0.2)
            if m is None:
                if got:
                    break
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return m.error().name()
            got.append(m.value().decode())
    finally:
        c.close()
    return got


def error_name(future):
    try:
        future.result(timeout=15)
        return "ok"
    except KafkaException as e:
        return e.args[0].name()


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")
    print(f"{what}: {got}")


def scenario(sasl, plain):
    root = admin(sasl, "admin")
    grants = [
        acl("TOPIC", "events", "User:alice", "WRITE"),
        acl("TOPIC", "alice.", "User:alice", "CREATE", pattern="PREFIXED"),
        acl("TOPIC", "events", "User:bob", "READ"),
        acl("GROUP", "readers", "User:bob", "READ"),
    ]
    create(root, grants)
    listed = root.describe_acls(everything()).result(timeout=15)
    check("acls listed", len(listed), 4)

    check("alice writes events", produce(sasl, "alice", "events", "a-1"), "ok")
    check("carol writes events", produce(sasl, "carol", "events", "c-1"), "TOPIC_AUTHORIZATION_FAILED")
    check("bob reads events in readers", consume(sasl, "bob", "events", "readers"), ["a-1"])
    check("bob reads in another group", consume(sasl, "bob", "events", "others"), "GROUP_AUTHORIZATION_FAILED")

    carol = admin(sasl, "carol")
    carol_sees = carol.list_topics(timeout=15).topics
    check("carol's metadata lists events", "events" in carol_sees, False)
    alice = admin(sasl, "alice")
    alice_sees = alice.list_topics(timeout=15).topics
    check("alice's metadata lists events", "events" in alice_sees, True)

    made = alice.create_topics([NewTopic("alice.t1", 1, 1), NewTopic("bob.t1", 1, 1)])
    check("alice creates alice.t1", error_name(made["alice.t1"]), "ok")
    check("alice creates bob.t1", error_name(made["bob.t1"]), "TOPIC_AUTHORIZATION_FAILED")
    gone = alice.delete_topics(["alice.t1"], operation_timeout=10)
    check("alice deletes alice.t1", error_name(gone["alice.t1"]), "TOPIC_AUTHORIZATION_FAILED")
    gone = root.delete_topics(["alice.t1"], operation_timeout=10)
    check("admin deletes alice.t1", error_name(gone["alice.t1"]), "ok")

    broker = ConfigResource(ConfigResource.Type.BROKER, "0")
    described = carol.describe_configs([broker])
    check("carol describes the broker's configs", error_name(described[broker]), "CLUSTER_AUTHORIZATION_FAILED")
    made = carol.create_acls([acl("TOPIC", "events", "User:carol", "ALL")])
    check("carol grants herself", error_name(list(made.values())[0]), "CLUSTER_AUTHORIZATION_FAILED")

    create(root, [acl("TOPIC", "events", "User:alice", "WRITE", permission="DENY")])
    check("alice writes with a deny", produce(sasl, "alice", "events", "a-2"), "TOPIC_AUTHORIZATION_FAILED")
    check("deny deleted", len(delete(root, denies_on_events("User:alice", None))), 1)
    check("alice writes again", produce(sasl, "alice", "events", "a-3"), "ok")

    check("anonymous writes on PLAINTEXT", produce(plain, None, "events", "x"), "TOPIC_AUTHORIZATION_FAILED")

    # Any principal may describe the cluster; groups are listed as far as the
    # principal may see them.
    check("alice describes the cluster", error_name(alice.describe_cluster()), "ok")
    groups = [g.group_id for g in carol.list_consumer_groups().result(timeout=15).valid]
    check("carol's group list shows readers", "readers" in groups, False)
    groups = [g.group_id for g in root.list_consumer_groups().result(timeout=15).valid]
    check("admin's group list shows readers", "readers" in groups, True)

    # A deny by host: bob from this host may not read.
    create(root, [acl("TOPIC", "events", "User:bob", "READ", permission="DENY", host="127.0.0.1")])
    check("bob reads from a denied host", consume(sasl, "bob", "events", "readers"), "TOPIC_AUTHORIZATION_FAILED")
    deleted = delete(root, denies_on_events("User:bob", "127.0.0.1"))
    check("host deny deleted", len(deleted), 1)

    # Nothing refused reached the log.
    got = sorted(consume(sasl, "admin", "events", "audit"))
    check("what the log holds", got, ["a-1", "a-3"])
    print("scenario done")


def after_restart(sasl):
    root = admin(sasl, "admin")  # kept: a client dropped mid-call ends the call
    listed = root.describe_acls(everything()).result(timeout=15)
    check("acls after restart", len(listed), 4)
    check("alice writes after restart", produce(sasl, "alice", "events", "a-4"), "ok")
    check("carol writes after restart", produce(sasl, "carol", "events", "c-2"), "TOPIC_AUTHORIZATION_FAILED")
    print("after restart done")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "scenario":
        scenario(*args)
    elif what == "after-restart":
        after_restart(*args)
    else:
        sys.exit(f"unknown command {what}")
