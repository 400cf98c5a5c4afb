//! One task per configured device. The task owns the device's link (BLE or demo), its
//! reconnect backoff and its protocol state, and answers "poll now" requests with a reading.
//!
//! The seam between the task and the radio is [`Link`]: raw bytes in and out. Both the BLE
//! transport (`ble/`) and the demo devices (`demo/`) implement it, so the demo runs the real
//! reassembly and decoding path.

mod poll;
mod task;

use std::future::Future;
use std::time::Duration;

pub use poll::{PollError, poll_jbd, poll_powermon};
pub use task::{DeviceError, DeviceHandle, spawn};

use crate::reading::DeviceKind;

/// What the user configured for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// The user's name for it; the `device` tag.
    pub name: String,
    pub kind: DeviceKind,
    /// Bluetooth address, upper-case `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Bound on each reply (and on each BlueZ call).
    pub timeout: Duration,
    /// BlueZ adapter name (e.g. `hci1`), when not the first one.
    pub adapter: Option<String>,
}

/// Errors of a link (transport). Each says what a user can do about it where that is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("not connected")]
    NotConnected,
    #[error("link lost")]
    Disconnected,
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error(
        "device not found (is it powered and in range? `blebatt scan` lists what this adapter sees)"
    )]
    NotFound,
    #[error("{0}")]
    Bluetooth(String),
    #[error(
        "the device has no {0} service/characteristic: is it really this kind of device? (`blebatt scan` shows what it looks like)"
    )]
    MissingCharacteristic(&'static str),
}

impl LinkError {
    /// True when the link should be torn down and re-established.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, LinkError::Timeout { .. })
    }
}

/// Raw-bytes access to one device: what `device/` needs from a transport.
///
/// Every method is bounded by the implementation's own timeouts; none blocks forever except
/// `notification`, which callers always wrap in a deadline.
pub trait Link: Send + 'static {
    /// Connects, discovers services and subscribes to notifications where the kind needs them.
    fn connect(&mut self) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Disconnects cleanly. Never fails: a link that is already gone is fine.
    fn disconnect(&mut self) -> impl Future<Output = ()> + Send;
    /// Writes a request (JBD).
    fn write(&mut self, data: &[u8]) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Waits for the next notification (JBD).
    fn notification(&mut self) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;
    /// Drops notifications that arrived before a new request (stale replies).
    fn drain(&mut self) -> usize;
    /// One GATT read of the record characteristic (PowerMon).
    fn read(&mut self) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;
}
