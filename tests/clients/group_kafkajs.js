// A KafkaJS consumer group (KafkaJS has no consumer without one): two members split
// a topic and commit; a third member of the group resumes from the commits.
//
// usage: node group_kafkajs.js BROKER TOPIC PARTITIONS
// Exits non-zero with the reason when anything is not as Kafka would do it.
const { Kafka, logLevel } = require("kafkajs");

const [broker, topic, partitions] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const N = 1000;
const M = 200;
const kafka = new Kafka({ clientId: "group-test", brokers: [broker], logLevel: logLevel.WARN });
const fail = (why) => {
  console.log("FAIL:", why);
  process.exit(1);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function produce(first, count) {
  const p = kafka.producer();
  await p.connect();
  const messages = [];
  for (let i = first; i < first + count; i++) messages.push({ key: String(i), value: String(i) });
  await p.send({ topic, messages, acks: -1 });
  await p.disconnect();
}

async function member(name, seen, owned) {
  const c = kafka.consumer({ groupId: "group-kafkajs", sessionTimeout: 10000, heartbeatInterval: 500 });
  c.on(c.events.GROUP_JOIN, (e) => {
    owned[name] = new Set((e.payload.memberAssignment[topic] || []).map(Number));
  });
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({
    eachMessage: async ({ message }) => {
      seen.set(message.value.toString(), name);
    },
  });
  return c;
}

(async () => {
  await produce(0, N);
  const seen = new Map();
  const owned = {};
  const a = await member("a", seen, owned);
  const b = await member("b", seen, owned);
  const deadline = Date.now() + 90000;
  // Settled: each holds a share, the shares are disjoint and cover the topic.
  const split = () =>
    owned.a &&
    owned.b &&
    owned.a.size > 0 &&
    owned.b.size > 0 &&
    ![...owned.a].some((p) => owned.b.has(p)) &&
    new Set([...owned.a, ...owned.b]).size === partitions;
  while ((seen.size < N || !split()) && Date.now() < deadline) await sleep(100);
  if (seen.size < N) fail(`consumed ${seen.size} of ${N}`);
  const all = new Set([...owned.a, ...owned.b]);
  if ([...owned.a].some((p) => owned.b.has(p)) || all.size !== partitions)
    fail(`not a split: a ${[...owned.a]}, b ${[...owned.b]}`);
  console.log(`split: a ${[...owned.a].sort()}, b ${[...owned.b].sort()}`);
  // Disconnecting commits what was consumed and leaves the group.
  await a.disconnect();
  await b.disconnect();
  await produce(N, M);
  const later = new Map();
  const c = await member("c", later, {});
  const until = Date.now() + 60000;
  while (later.size < M && Date.now() < until) await sleep(100);
  const old = [...later.keys()].filter((v) => Number(v) < N);
  if (old.length > 0 || later.size !== M)
    fail(`the new member got ${later.size} values, ${old.length} already committed`);
  await c.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchOffsets({ groupId: "group-kafkajs", topics: [topic] });
  const committed = offsets[0].partitions.map((p) => Number(p.offset)).reduce((x, y) => x + y, 0);
  const ends = (await admin.fetchTopicOffsets(topic)).map((p) => Number(p.high)).reduce((x, y) => x + y, 0);
  if (committed !== ends) fail(`committed ${committed} in all, end ${ends}`);
  const groups = (await admin.listGroups()).groups.map((g) => g.groupId);
  if (!groups.includes("group-kafkajs")) fail(`listGroups: ${groups}`);
  await admin.deleteGroups(["group-kafkajs"]);
  await admin.disconnect();
  console.log("OK");
  process.exit(0);
})().catch((e) => fail(e.stack || e));
