//! One handler per API (the group APIs by family: `membership`, `offsets`,
//! `group_admin`, and `coordinated`, their way to a coordinating core elsewhere). A handler takes a decoded request and returns its response
//! (the connection decodes, frames and writes): it asks the broker where each
//! partition lives, runs the parts this core owns, forwards the others in
//! single-port mode, and answers the rest with the error that says why.

pub mod acls;
pub mod api_versions;
pub mod client_quotas;
pub mod configs;
pub mod coordinated;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod fetch;
pub mod find_coordinator;
pub mod group_admin;
pub mod init_producer_id;
pub mod list_offsets;
pub mod membership;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod sasl;
pub mod scram_credentials;
