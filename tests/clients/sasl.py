"""Kafka with SASL from Python, for tests/sasl.rs.

Every command takes PROTOCOL (SASL_SSL or SASL_PLAINTEXT), the CA file (for
SASL_SSL; "-" otherwise), MECHANISM, USER and PASSWORD after its own arguments'
BOOTSTRAP.

  sasl.py confluent-produce BOOTSTRAP PROTOCOL CA MECHANISM USER PASSWORD TOPIC COUNT SECONDS
      confluent-kafka producer: COUNT messages spread over SECONDS (re-authentication
      happens meanwhile when the server asks for it); prints "sent COUNT".
  sasl.py python-produce BOOTSTRAP PROTOCOL CA MECHANISM USER PASSWORD TOPIC COUNT
      kafka-python producer; prints "sent COUNT".
  sasl.py fails BOOTSTRAP PROTOCOL CA MECHANISM USER PASSWORD
      confluent-kafka's metadata request must fail to authenticate; prints the error.
  sasl.py users BOOTSTRAP add|delete|describe USER [PASSWORD]
      confluent-kafka AdminClient on a PLAINTEXT listener: AlterUserScramCredentials
      (SCRAM-SHA-512, 4096 iterations) or DescribeUserScramCredentials; prints
      "added USER", "deleted USER" or "USER MECHANISM ITERATIONS" lines.
  sasl.py raw-v0 HOST:PORT USER PASSWORD
      SaslHandshake v0 and a bare PLAIN token, then Metadata, on one socket (no
      SaslAuthenticate, as clients before Kafka 1.0 do); prints "metadata after v0".
  sasl.py raw-reauth HOST:PORT USER PASSWORD OTHER OTHER_PASSWORD
      PLAIN as USER, then re-authentication as OTHER on the same socket; prints the
      second answer's error code and whether the connection closed.
  sasl.py raw-early HOST:PORT
      a Produce before any SASL, and on another socket a 1 MiB frame: each
      connection must close with nothing answered; prints "closed 2".
  sasl.py raw-wrong HOST:PORT USER PASSWORD COUNT
      COUNT SaslHandshake v1 + SaslAuthenticate PLAIN exchanges, each on a new
      socket; prints each answer's error code and how long it took.
"""

import socket
import struct
import sys
import time

from tls import read_exactly


def confluent_config(bootstrap, protocol, ca, mechanism, user, password):
    config = {
        "bootstrap.servers": bootstrap,
        "security.protocol": protocol,
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }
    if protocol == "SASL_SSL":
        config["ssl.ca.location"] = ca
    return config


def confluent_produce(bootstrap, protocol, ca, mechanism, user, password, topic, count, seconds):
    from confluent_kafka import Producer

    config = confluent_config(bootstrap, protocol, ca, mechanism, user, password)
    config["acks"] = "all"
    producer = Producer(config)
    errors = []

    def done(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(count):
        producer.produce(topic, f"{user}-{i}".encode(), on_delivery=done)
        producer.flush(30)
        if seconds:
            time.sleep(seconds / count)
    left = producer.flush(30)
    if errors or left:
        sys.exit(f"errors {errors}, {left} not delivered")
    print(f"sent {count}")


def python_produce(bootstrap, protocol, ca, mechanism, user, password, topic, count):
    from kafka import KafkaProducer

    kwargs = dict(
        bootstrap_servers=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
        acks="all",
    )
    if protocol == "SASL_SSL":
        kwargs["ssl_cafile"] = ca
    producer = KafkaProducer(**kwargs)
    for i in range(count):
        producer.send(topic, f"py-{user}-{i}".encode()).get(timeout=30)
    producer.close()
    print(f"sent {count}")


def fails(bootstrap, protocol, ca, mechanism, user, password):
    from confluent_kafka import Producer

    errors = []
    config = confluent_config(bootstrap, protocol, ca, mechanism, user, password)
    config["error_cb"] = errors.append
    producer = Producer(config)
    deadline = time.time() + 20
    while not errors and time.time() < deadline:
        producer.poll(0.2)
    said = " ".join(str(e) for e in errors)
    if "Authentication failed" not in said:
        sys.exit(f"no authentication failure in 20 s: {said!r}")
    print(f"failed: {said}")


def users(bootstrap, what, user, password=None):
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    if what == "errors":
        few = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 1000)
        for change in [
            UserScramCredentialUpsertion(user, few, b"pw"),
            UserScramCredentialDeletion("nobody", ScramMechanism.SCRAM_SHA_256),
        ]:
            for name, future in admin.alter_user_scram_credentials([change]).items():
                try:
                    future.result(timeout=30)
                    print(f"{name} accepted")
                except Exception as e:
                    print(f"{name} refused {e.args[0].name()}")
        return
    if what == "describe":
        for name, future in admin.describe_user_scram_credentials([user]).items():
            for info in future.result(timeout=30).scram_credential_infos:
                print(f"{name} {info.mechanism.name} {info.iterations}")
        return
    if what == "add":
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        change = UserScramCredentialUpsertion(user, info, password.encode())
    else:
        change = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
    for name, future in admin.alter_user_scram_credentials([change]).items():
        future.result(timeout=30)
        print(f"{'added' if what == 'add' else 'deleted'} {name}")


def frame(api, version, correlation, body, client=b"sasl-test"):
    header = struct.pack(">hhih", api, version, correlation, len(client)) + client
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_frame(sock):
    size = struct.unpack(">i", read_exactly(sock, 4))[0]
    return read_exactly(sock, size)


def kafka_string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def connect(addr):
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def raw_v0(addr, user, password):
    sock = connect(addr)
    sock.sendall(frame(17, 0, 1, kafka_string("PLAIN")))
    answer = read_frame(sock)
    correlation, error = struct.unpack(">ih", answer[:6])
    assert (correlation, error) == (1, 0), (correlation, error)
    token = b"\0" + user.encode() + b"\0" + password.encode()
    sock.sendall(struct.pack(">i", len(token)) + token)
    # PLAIN has no server token: an empty frame says it succeeded.
    assert read_frame(sock) == b""
    # Metadata v0 for every topic (an empty array).
    sock.sendall(frame(3, 0, 2, struct.pack(">i", 0)))
    answer = read_frame(sock)
    assert struct.unpack(">i", answer[:4])[0] == 2
    print("metadata after v0")


def sasl_plain(sock, user, password, correlation):
    """SaslHandshake v1 and SaslAuthenticate v0 with PLAIN: the answer's error code."""
    sock.sendall(frame(17, 1, correlation, kafka_string("PLAIN")))
    answer = read_frame(sock)
    assert struct.unpack(">ih", answer[:6]) == (correlation, 0), answer
    token = b"\0" + user.encode() + b"\0" + password.encode()
    sock.sendall(frame(36, 0, correlation + 1, struct.pack(">i", len(token)) + token))
    answer = read_frame(sock)
    return struct.unpack(">h", answer[4:6])[0]


def closed(sock):
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def raw_reauth(addr, user, password, other, other_password):
    sock = connect(addr)
    assert sasl_plain(sock, user, password, 1) == 0
    error = sasl_plain(sock, other, other_password, 3)
    print(f"reauth error {error} closed {closed(sock)}")


def raw_early(addr):
    sock = connect(addr)
    # Produce v3: no transactional id, acks 1, timeout, one topic with no data.
    body = struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", 1) + kafka_string("events")
    body += struct.pack(">i", 0)
    sock.sendall(frame(0, 3, 1, body))
    assert closed(sock), "a produce before SASL was answered"
    sock = connect(addr)
    sock.sendall(struct.pack(">i", 1 << 20) + b"\0" * 1024)
    assert closed(sock), "a 1 MiB frame before SASL was read"
    print("closed 2")


def raw_wrong(addr, user, password, count):
    for i in range(count):
        sock = connect(addr)
        sock.sendall(frame(17, 1, 1, kafka_string("PLAIN")))
        answer = read_frame(sock)
        assert struct.unpack(">ih", answer[:6]) == (1, 0), answer
        token = b"\0" + user.encode() + b"\0" + password.encode()
        began = time.monotonic()
        sock.sendall(frame(36, 0, 2, struct.pack(">i", len(token)) + token))
        answer = read_frame(sock)
        took = time.monotonic() - began
        correlation, error = struct.unpack(">ih", answer[:6])
        # The connection closes after a failure.
        closed = sock.recv(1) == b""
        print(f"attempt {i} error {error} took {took:.3f} closed {closed}")
        sock.close()


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "confluent-produce":
        confluent_produce(*args[:7], int(args[7]), float(args[8]))
    elif what == "python-produce":
        python_produce(*args[:7], int(args[7]))
    elif what == "fails":
        fails(*args)
    elif what == "users":
        users(*args)
    elif what == "raw-v0":
        raw_v0(*args)
    elif what == "raw-reauth":
        raw_reauth(*args)
    elif what == "raw-early":
        raw_early(*args)
    elif what == "raw-wrong":
        raw_wrong(*args[:3], int(args[3]))
    else:
        sys.exit(f"unknown command {what}")
