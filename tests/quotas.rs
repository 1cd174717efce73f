//! Client quotas: set and read with AlterClientQuotas and DescribeClientQuotas,
//! they hold a real producer (confluent-kafka) and a real consumer to their byte
//! rates, within 10%, while a client without a quota runs free; bad quotas get
//! Kafka's errors.

mod common;

use common::requests::call;
use kafka_protocol::messages::{self as m, ApiKey};
use kafka_protocol::protocol::StrBytes;

/// The quota each limited client gets, bytes per second.
const RATE: f64 = 400_000.0;

fn client_entity(name: &str) -> m::alter_client_quotas_request::EntityData {
    m::alter_client_quotas_request::EntityData::default()
        .with_entity_type(StrBytes::from_static_str("client-id"))
        .with_entity_name(Some(StrBytes::from_string(name.to_string())))
}

fn op(key: &'static str, value: f64) -> m::alter_client_quotas_request::OpData {
    m::alter_client_quotas_request::OpData::default()
        .with_key(StrBytes::from_static_str(key))
        .with_value(value)
}

/// AlterClientQuotas with `entries`: each entry's error code.
fn alter(port: u16, entries: Vec<m::alter_client_quotas_request::EntryData>) -> Vec<i16> {
    let req = m::AlterClientQuotasRequest::default().with_entries(entries);
    let resp: m::AlterClientQuotasResponse = call(port, ApiKey::AlterClientQuotas, 1, &req);
    resp.entries.iter().map(|e| e.error_code).collect()
}

/// DescribeClientQuotas of every client-id entity (an error leaves none).
fn client_id_quotas(port: u16) -> Vec<m::describe_client_quotas_response::EntryData> {
    let component = m::describe_client_quotas_request::ComponentData::default()
        .with_entity_type(StrBytes::from_static_str("client-id"))
        .with_match_type(2)
        .with_match(None);
    let req = m::DescribeClientQuotasRequest::default().with_components(vec![component]);
    let resp: m::DescribeClientQuotasResponse = call(port, ApiKey::DescribeClientQuotas, 1, &req);
    assert_eq!(resp.error_code, 0, "{resp:?}");
    resp.entries.unwrap_or_default()
}

/// `quotas.py` and the numbers it printed after `bytes` and `throttled`.
fn run(args: &[&str]) -> (f64, f64) {
    let (ok, said) = common::python("quotas.py", args);
    assert!(ok, "{args:?}: {said}");
    let field = |name: &str| -> Option<f64> {
        said.split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .and_then(|v| v.parse().ok())
    };
    let number = |name: &str| field(name).unwrap_or_else(|| panic!("no {name} in {said}"));
    // A consumer reports no throttles: 0, which a check on a producer would catch.
    (
        number("bytes") / number("seconds"),
        field("throttled").unwrap_or(0.0),
    )
}

#[test]
fn quotas_hold_real_clients_to_their_byte_rates() {
    let mut s = common::start_with("1", 1, &[]);
    let broker = format!("127.0.0.1:{}", s.port);

    // Set, with one bad entry beside: each entry gets its own answer.
    let limited = m::alter_client_quotas_request::EntryData::default()
        .with_entity(vec![client_entity("limited")])
        .with_ops(vec![
            op("producer_byte_rate", RATE),
            op("consumer_byte_rate", RATE),
        ]);
    let bad = m::alter_client_quotas_request::EntryData::default()
        .with_entity(vec![client_entity("other")])
        .with_ops(vec![op("bytes_per_fortnight", 1.0)]);
    let codes = alter(s.port, vec![limited, bad]);
    assert_eq!(codes, [0, 42], "the bad key is INVALID_REQUEST");

    let entries = client_id_quotas(s.port);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut values: Vec<(String, f64)> = entries[0]
        .values
        .iter()
        .map(|v| (v.key.to_string(), v.value))
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        values,
        [
            ("consumer_byte_rate".to_string(), RATE),
            ("producer_byte_rate".to_string(), RATE)
        ]
    );

    // A producer without a quota runs far faster than the limit; the limited one is
    // held to it, told so by throttle_time_ms.
    let (free, _) = run(&["produce", &broker, "free", "3"]);
    assert!(free > 3.0 * RATE, "the free producer ran at {free:.0} B/s");
    let (rate, throttled) = run(&["produce", &broker, "limited", "8"]);
    println!("free producer {free:.0} B/s; limited producer {rate:.0} B/s (quota {RATE})");
    assert!(throttled > 0.0, "no throttle_time_ms reached the producer");
    // The values are most of each request's bytes (batch headers are the rest).
    assert!(
        (0.8 * RATE..=1.1 * RATE).contains(&rate),
        "the limited producer ran at {rate:.0} B/s for a quota of {RATE} B/s"
    );

    // The limited consumer reads at its rate.
    let (rate, _) = run(&["consume", &broker, "limited", "5"]);
    println!("limited consumer {rate:.0} B/s (quota {RATE})");
    assert!(
        (0.8 * RATE..=1.1 * RATE).contains(&rate),
        "the limited consumer read at {rate:.0} B/s for a quota of {RATE} B/s"
    );
    // Each quota's throttles are counted under its own name.
    let text = common::scrape_when(s.admin, |t| t.contains("consumer_byte_rate"));
    for quota in ["producer_byte_rate", "consumer_byte_rate"] {
        let counted = text
            .lines()
            .filter(|l| l.starts_with("tidewater_kafka_throttled_requests_total{"))
            .filter(|l| l.contains(&format!("quota=\"{quota}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        assert!(counted > 0.0, "no {quota} throttles counted:\n{text}");
    }

    // Removed, the quotas are gone; a byte rate with a fraction is refused.
    let remove = |key: &'static str| op(key, 0.0).with_remove(true);
    let entry = m::alter_client_quotas_request::EntryData::default()
        .with_entity(vec![client_entity("limited")])
        .with_ops(vec![
            remove("producer_byte_rate"),
            remove("consumer_byte_rate"),
        ]);
    let fraction = m::alter_client_quotas_request::EntryData::default()
        .with_entity(vec![client_entity("half")])
        .with_ops(vec![op("producer_byte_rate", 0.5)]);
    assert_eq!(alter(s.port, vec![entry, fraction]), [0, 42]);
    assert_eq!(client_id_quotas(s.port).len(), 0);
    let _ = s.child.kill();
}
