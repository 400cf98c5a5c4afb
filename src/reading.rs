//! A reading: what one poll of one device produced, stamped when its last reply byte arrived.

use crate::protocol::Omitted;
use crate::protocol::jbd::{JbdReading, PackMismatch};
use crate::protocol::powermon::PowermonReading;

/// The kinds of device blebatt talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Jbd,
    Powermon,
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::Jbd => "jbd",
            DeviceKind::Powermon => "powermon",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Jbd(JbdReading),
    Powermon(PowermonReading),
}

impl Values {
    /// Values the device sent that it cannot mean, left out of the reading.
    pub fn omitted(&self) -> &[Omitted] {
        match self {
            Values::Jbd(r) => r.omitted(),
            Values::Powermon(r) => &r.omitted,
        }
    }

    /// A JBD pack voltage far from the sum of its cells.
    pub fn pack_mismatch(&self) -> Option<PackMismatch> {
        match self {
            Values::Jbd(r) => r.pack_mismatch(),
            Values::Powermon(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The user's name for the device (tag `device`).
    pub device: String,
    /// Its Bluetooth address, `AA:BB:CC:DD:EE:FF` (tag `address`).
    pub address: String,
    /// Unix time in nanoseconds when the reply completed.
    pub time_ns: i64,
    pub values: Values,
}

/// The system clock now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
