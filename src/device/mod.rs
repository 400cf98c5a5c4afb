//! One task per configured device: the generic lifecycle. The task owns the device's
//! transport (BLE or demo), its reconnect backoff and its kind's per-connection session, and
//! answers "poll now" requests with a reading. It knows no kind: what to subscribe, write and
//! read is the session's business (`devices/<kind>/session.rs`).

mod task;

use std::time::Duration;

pub use task::{DeviceError, DeviceHandle, spawn, spawn_metered};

use crate::devices::Kind;
pub use crate::devices::PollError;
use crate::secret::{Passkey, Secret};

/// What the user configured for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// The user's name for it; the `device` tag.
    pub name: String,
    pub kind: &'static Kind,
    /// Bluetooth address, upper-case `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Bound on each reply (and on each BlueZ call).
    pub timeout: Duration,
    /// BlueZ adapter name (e.g. `hci1`), when not the first one.
    pub adapter: Option<String>,
    /// The device's app password (`password`, for kinds that have one), sent only to it.
    pub password: Option<Secret>,
    /// The passkey to pair with (`passkey`), for devices that require BLE pairing.
    pub passkey: Option<Passkey>,
    /// The key its data is encrypted with (`key`, for kinds that need one: Victron).
    pub key: Option<Secret>,
}
