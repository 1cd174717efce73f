//! The reference IoT event (`schemas/sensor.avsc`) in Avro binary, encoded by hand for
//! speed: the layout is fixed by the schema, so each event is a handful of writes into
//! a reused buffer (no allocation per event). `apache-avro` decodes these in the tests.

use super::batch::varint; // Avro's int and long are zigzag varints too

/// The schema the events follow.
pub const SCHEMA: &str = include_str!("../../../schemas/sensor.avsc");
/// Bytes of the `metadata` field: brings an event to about 300 bytes.
const METADATA_BYTES: usize = 200;

/// The fields that vary per event.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub device: u32,
    pub sensor_type: i32,
    pub timestamp_ms: i64,
    pub temperature: f64,
    pub humidity: f64,
    pub pressure: f64,
    pub battery_level: f64,
    pub status: i32,
    pub latitude: f64,
    pub longitude: f64,
}

impl Reading {
    /// A reading of fixed, plausible values for `device`: what tests and benchmarks
    /// encode when the values do not matter.
    pub fn sample(device: u32) -> Reading {
        Reading {
            device,
            sensor_type: 3,
            timestamp_ms: 1_700_000_000_000 + i64::from(device),
            temperature: 21.5,
            humidity: 40.0,
            pressure: 1013.0,
            battery_level: 88.0,
            status: 1,
            latitude: 48.1,
            longitude: 11.5,
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The key of a device's events, `device-000123`, on the stack: (bytes, length).
fn key_bytes(device: u32) -> ([u8; 17], usize) {
    let mut k = [0u8; 17];
    k[..7].copy_from_slice(b"device-");
    let digits = if device >= 1_000_000 { 10 } else { 6 };
    let mut d = device;
    for i in (0..digits).rev() {
        k[7 + i] = b'0' + (d % 10) as u8;
        d /= 10;
    }
    // Wider ids keep their significant digits only, as `{:06}` would print them.
    let start = if digits == 10 {
        k[7..17].iter().position(|&c| c != b'0').unwrap_or(9)
    } else {
        0
    };
    if start > 0 {
        k.copy_within(7 + start..17, 7);
    }
    (k, 7 + digits - start)
}

/// The key of a device's events: `device-000123`.
pub fn device_key(device: u32, out: &mut Vec<u8>) {
    let (k, n) = key_bytes(device);
    out.clear();
    out.extend_from_slice(&k[..n]);
}

/// Encodes one event into `out` (cleared first).
pub fn encode(r: &Reading, out: &mut Vec<u8>) {
    out.clear();
    let (key, n) = key_bytes(r.device);
    put_bytes(out, &key[..n]);
    varint(out, i64::from(r.sensor_type));
    varint(out, r.timestamp_ms);
    for v in [r.temperature, r.humidity, r.pressure, r.battery_level] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    varint(out, i64::from(r.status));
    out.extend_from_slice(&r.latitude.to_le_bytes());
    out.extend_from_slice(&r.longitude.to_le_bytes());
    put_bytes(out, b"fw-2.4.1");
    varint(out, METADATA_BYTES as i64);
    // A fixed filler with the device id in front: copied, not computed, per event.
    out.extend_from_slice(&r.device.to_le_bytes());
    out.extend_from_slice(&METADATA_FILL[4..]);
}

/// The `metadata` filler bytes.
static METADATA_FILL: [u8; METADATA_BYTES] = {
    let mut b = [0u8; METADATA_BYTES];
    let mut i = 0;
    while i < METADATA_BYTES {
        b[i] = (i as u8).wrapping_mul(31).wrapping_add(7);
        i += 1;
    }
    b
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_format() {
        let mut k = Vec::new();
        for d in [0u32, 7, 123, 999_999, 1_000_000, 1_234_567, u32::MAX] {
            device_key(d, &mut k);
            assert_eq!(k, format!("device-{d:06}").into_bytes());
        }
    }
}
