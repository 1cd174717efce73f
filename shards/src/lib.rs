//! What one Tidewater core owns, and the fixed mapping that decides it.
//!
//! Owns the partition -> core mapping ([`partition_owner`]) and the read-only table of
//! topics and partitions every core keeps a copy of ([`PartitionTable`]). The same
//! function serves produce routing, keyBy routing and Metadata, so a key that a Kafka
//! client partitioned never crosses cores. The window pipeline ([`pipeline`]) and its
//! sinks ([`sink`]) run on each core over that core's log; nothing here shares state
//! between cores except through the pipeline's mailboxes.

pub mod partitioner;
pub mod pipeline;
pub mod sink;

/// The core that owns partition `partition` of any topic, among `shard_count` cores.
///
/// Partitions are dealt round-robin: partition `p` lives on core `p % shard_count`.
/// Topics with fewer partitions than cores leave the higher cores idle for that topic;
/// partition counts that are not a multiple of the core count put one more partition
/// on the lower cores.
pub fn partition_owner(partition: u32, shard_count: u32) -> u32 {
    assert!(shard_count > 0, "at least one shard");
    partition % shard_count
}

/// The storage name of a topic's partition: `<topic>-<partition>`.
pub fn partition_name(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

/// A topic as declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub partitions: u32,
}

/// Every topic's partitions and their owners; identical on every core.
#[derive(Clone, Debug)]
pub struct PartitionTable {
    shard_count: u32,
    topics: Vec<Topic>,
}

impl PartitionTable {
    pub fn new(shard_count: u32, topics: Vec<Topic>) -> Self {
        PartitionTable {
            shard_count,
            topics,
        }
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// Adds a topic created at run time (CreateTopics); false if it exists.
    pub fn add_topic(&mut self, topic: Topic) -> bool {
        if self.topic(&topic.name).is_some() {
            return false;
        }
        self.topics.push(topic);
        true
    }

    /// Gives a topic `partitions` partitions (CreatePartitions, or its undo); false
    /// if there is no such topic.
    pub fn set_partitions(&mut self, name: &str, partitions: u32) -> bool {
        match self.topics.iter_mut().find(|t| t.name == name) {
            Some(t) => {
                t.partitions = partitions;
                true
            }
            None => false,
        }
    }

    /// Removes a topic (DeleteTopics); false if there was none.
    pub fn remove_topic(&mut self, name: &str) -> bool {
        let before = self.topics.len();
        self.topics.retain(|t| t.name != name);
        self.topics.len() != before
    }

    /// The (topic, partition) pairs owned by `shard`, in topic then partition order.
    pub fn owned_by(&self, shard: u32) -> Vec<(&str, u32)> {
        self.topics
            .iter()
            .flat_map(|t| (0..t.partitions).map(move |p| (t.name.as_str(), p)))
            .filter(|&(_, p)| partition_owner(p, self.shard_count) == shard)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_exactly_one_owner_and_load_is_even() {
        let t = PartitionTable::new(
            3,
            vec![Topic {
                name: "a".into(),
                partitions: 8,
            }],
        );
        let owned: Vec<usize> = (0..3).map(|s| t.owned_by(s).len()).collect();
        assert_eq!(owned, vec![3, 3, 2]);
        let mut all: Vec<u32> = (0..3).flat_map(|s| t.owned_by(s)).map(|(_, p)| p).collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        assert_eq!(partition_name("iot", 7), "iot-7");
    }
}
