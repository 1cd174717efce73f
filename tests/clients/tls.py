"""Kafka over TLS from Python, for tests/tls.rs.

  tls.py produce BOOTSTRAP CA CERT KEY TOPIC COUNT
      kafka-python producer with security_protocol=SSL and a client certificate;
      prints "sent COUNT".
  tls.py registry URL CA CERT KEY
      confluent-kafka's SchemaRegistryClient over HTTPS with a client certificate
      registers an Avro schema and reads it back; prints "registered ID".
  tls.py reload PID HOST:PORT CA CERT KEY SERVER_CERT SERVER_KEY NEW_CERT NEW_KEY
      a raw TLS connection answers ApiVersions; the server's certificate and key
      files are replaced and the server gets SIGHUP; a new connection must see the
      new certificate and the first connection must still answer. Prints
      "reloaded OLD_SERIAL -> NEW_SERIAL".
"""

import os
import shutil
import signal
import socket
import ssl
import struct
import sys
import time


def produce(bootstrap, ca, cert, key, topic, count):
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        security_protocol="SSL",
        ssl_cafile=ca,
        ssl_certfile=cert,
        ssl_keyfile=key,
        ssl_check_hostname=True,
        acks="all",
    )
    for i in range(count):
        producer.send(topic, f"tls-{i}".encode()).get(timeout=30)
    producer.close()
    print(f"sent {count}")


def registry(url, ca, cert, key):
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient(
        {
            "url": url,
            "ssl.ca.location": ca,
            "ssl.certificate.location": cert,
            "ssl.key.location": key,
        }
    )
    text = '{"type":"record","name":"Reading","fields":[{"name":"v","type":"long"}]}'
    schema_id = client.register_schema("readings-value", Schema(text, "AVRO"))
    got = client.get_schema(schema_id)
    assert '"Reading"' in got.schema_str, got.schema_str
    print(f"registered {schema_id}")


def context(ca, cert, key):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def connect(addr, ctx):
    host, port = addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=host)


def api_versions(sock, correlation):
    client = b"tls-test"
    body = struct.pack(">hhih", 18, 0, correlation, len(client)) + client
    sock.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", read_exactly(sock, 4))[0]
    answer = read_exactly(sock, size)
    got, error = struct.unpack(">ih", answer[:6])
    assert got == correlation and error == 0, (got, error)


def read_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError("the server closed the connection")
        buf += part
    return buf


def reload(pid, addr, ca, cert, key, server_cert, server_key, new_cert, new_key):
    ctx = context(ca, cert, key)
    first = connect(addr, ctx)
    api_versions(first, 1)
    old = first.getpeercert()["serialNumber"]
    shutil.copyfile(new_cert, server_cert)
    shutil.copyfile(new_key, server_key)
    os.kill(pid, signal.SIGHUP)
    deadline = time.time() + 20
    while True:
        fresh = connect(addr, ctx)
        new = fresh.getpeercert()["serialNumber"]
        api_versions(fresh, 2)
        fresh.close()
        if new != old:
            break
        if time.time() > deadline:
            sys.exit(f"still serial {old} 20 s after SIGHUP")
        time.sleep(0.2)
    api_versions(first, 3)
    first.close()
    print(f"reloaded {old} -> {new}")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "produce":
        produce(*args[:5], int(args[5]))
    elif what == "registry":
        registry(*args)
    elif what == "reload":
        reload(int(args[0]), *args[1:])
    else:
        sys.exit(f"unknown command {what}")
