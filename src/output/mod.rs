//! Readings to Influx line protocol. The names come from each kind's schema
//! (`devices/<kind>/fields.rs`); this module only writes them.
//!
//! The writer puts every byte straight into the output buffer: the measurement and tags with
//! line protocol's escaping (a run of plain bytes is copied at once), then each field as its
//! kind hands it over, then the timestamp. Its output is byte-for-byte what the
//! `influxdb-line-protocol` builder writes for the same point (a property test holds it to
//! that), without a `write!` per character or a list of fields per line.

use std::io::Write as _;

use crate::devices::{FieldSpec, Fields, Value};
use crate::reading::Reading;

/// Characters escaped with a backslash, besides the backslash itself.
const MEASUREMENT_SPECIAL: &[u8] = b", ";
const KEY_SPECIAL: &[u8] = b",= ";
const STRING_SPECIAL: &[u8] = b"\"";

/// Appends `text` to `buf`, a backslash before each byte in `special` and each backslash.
fn escaped(buf: &mut Vec<u8>, text: &str, special: &[u8]) {
    let bytes = text.as_bytes();
    let mut from = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\\' || special.contains(b) {
            buf.extend_from_slice(&bytes[from..i]);
            buf.push(b'\\');
            from = i;
        }
    }
    buf.extend_from_slice(&bytes[from..]);
}

fn tag(buf: &mut Vec<u8>, key: &str, value: &str) {
    // Empty tag values are not allowed in line protocol: omit them.
    if value.is_empty() {
        return;
    }
    buf.push(b',');
    escaped(buf, key, KEY_SPECIAL);
    buf.push(b'=');
    escaped(buf, value, KEY_SPECIAL);
}

/// Writes fields as they come, after the series key.
struct LineFields<'a> {
    buf: &'a mut Vec<u8>,
    written: usize,
}

impl Fields for LineFields<'_> {
    fn field(&mut self, spec: &FieldSpec, n: Option<usize>, value: Value<'_>) {
        // Never emit NaN or infinity.
        if matches!(value, Value::Float(x) if !x.is_finite()) {
            return;
        }
        let buf = &mut *self.buf;
        buf.push(if self.written == 0 { b' ' } else { b',' });
        self.written += 1;
        escaped(buf, spec.key, KEY_SPECIAL);
        if let Some(n) = n {
            // Writing to a Vec cannot fail.
            let _ = write!(buf, "_{n}");
        }
        buf.push(b'=');
        let _ = match value {
            Value::Float(x) => write!(buf, "{x}"),
            Value::Int(x) => write!(buf, "{x}i"),
            Value::Bool(x) => write!(buf, "{x}"),
            Value::Str(s) => {
                buf.push(b'"');
                escaped(buf, s, STRING_SPECIAL);
                buf.push(b'"');
                Ok(())
            }
        };
    }
}

/// Appends the reading as one line (with its trailing newline) to `buf`.
/// A point without fields is never written: it would be an invalid line.
pub fn write_line(buf: &mut Vec<u8>, reading: &Reading) {
    let start = buf.len();
    let values = reading.values.as_ref();
    escaped(buf, values.kind().measurement, MEASUREMENT_SPECIAL);
    tag(buf, "device", &reading.device);
    tag(buf, "address", &reading.address);
    values.tags(&mut |key, value| tag(buf, key, value));
    let mut fields = LineFields { buf, written: 0 };
    values.fields(&mut fields);
    if let Some(d) = &reading.derived {
        crate::energy::fields::write(d, &mut fields);
    }
    if fields.written == 0 {
        buf.truncate(start);
        return;
    }
    let _ = writeln!(buf, " {}", reading.time_ns);
}

/// The reading as one line, newline included.
pub fn line(reading: &Reading) -> String {
    let mut buf = Vec::new();
    write_line(&mut buf, reading);
    String::from_utf8(buf).expect("the line writer writes UTF-8")
}

#[cfg(test)]
mod tests;
