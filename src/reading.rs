//! A reading: what one poll of one device produced, stamped when its last reply byte arrived.

use std::sync::Arc;

use crate::devices::Values;

#[derive(Debug, Clone)]
pub struct Reading {
    /// The user's name for the device (tag `device`).
    pub device: String,
    /// Its Bluetooth address, `AA:BB:CC:DD:EE:FF` (tag `address`).
    pub address: String,
    /// Unix time in nanoseconds when the reply completed.
    pub time_ns: i64,
    /// The kind's typed values (its measurement, tags and fields).
    pub values: Arc<dyn Values>,
    /// The energy counters and time estimates, for a battery kind polled by a device task.
    pub derived: Option<crate::energy::Derived>,
}

/// The system clock now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
