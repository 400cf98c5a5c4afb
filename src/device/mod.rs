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
    /// An error from BlueZ or D-Bus. `cause` is what the transport recognised it as (from
    /// the D-Bus error name, e.g. `org.bluez.Error.Failed`, kept in `name`): hints match on
    /// the cause, never on the message.
    #[error("{message}{}", name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Bluetooth {
        cause: Cause,
        name: Option<String>,
        message: String,
    },
    #[error(
        "the device has no {0} service/characteristic: is it really this kind of device? (`blebatt scan` shows what it looks like)"
    )]
    MissingCharacteristic(&'static str),
}

/// What a transport error is, as far as a user can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The bus refused us: the user may not talk to BlueZ.
    AccessDenied,
    /// Nobody answers for BlueZ on the bus, or the bus connection is gone.
    BluezUnavailable,
    /// The adapter is off or blocked.
    AdapterNotReady,
    /// The device did not complete the connection (BlueZ `le-connection-abort-by-local`):
    /// typically it is out of range, or busy with another central.
    ConnectAborted,
    /// Another connect or scan is already in progress.
    InProgress,
    Other,
}

impl LinkError {
    /// The recognised cause of a Bluetooth error.
    pub fn cause(&self) -> Option<Cause> {
        match self {
            LinkError::Bluetooth { cause, .. } => Some(*cause),
            _ => None,
        }
    }

    /// True when the link should be torn down and re-established.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, LinkError::Timeout { .. })
    }
}

/// A transport's "I cannot recover": set once by the transport (BlueZ or the D-Bus connection
/// gone for good, the adapter removed, a background task dead); the run loop then stops and
/// exits non-zero so that Telegraf restarts the process.
#[derive(Debug, Clone)]
pub struct Failure(tokio::sync::watch::Receiver<Option<String>>);

/// The transport's side of a [`Failure`].
pub type FailureSender = tokio::sync::watch::Sender<Option<String>>;

impl Failure {
    pub fn channel() -> (FailureSender, Failure) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, Failure(rx))
    }

    /// A transport that cannot fail this way (the demo).
    pub fn never() -> Failure {
        // With the sender gone, `wait` stays pending.
        Self::channel().1
    }

    /// Resolves with the reason once the transport has failed; pending for ever otherwise.
    pub async fn wait(&mut self) -> String {
        match self.0.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }
}

/// Raw-bytes access to one device: what `device/` needs from a transport.
///
/// Every method is bounded by the implementation's own timeouts; none blocks forever except
/// `notification`, which callers always wrap in a deadline.
pub trait Link: Send + 'static {
    /// Connects, discovers services and subscribes to notifications where the kind needs them.
    fn connect(&mut self) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Disconnects (and cancels a connect in progress). Never fails: a link that is already
    /// gone is fine. Returns true when the device is known not to be connected any more,
    /// false when that could not be confirmed (e.g. BlueZ did not answer in time).
    fn disconnect(&mut self) -> impl Future<Output = bool> + Send;
    /// Writes a request (JBD).
    fn write(&mut self, data: &[u8]) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Waits for the next notification (JBD).
    fn notification(&mut self) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;
    /// Drops notifications that arrived before a new request (stale replies).
    fn drain(&mut self) -> usize;
    /// One GATT read of the record characteristic (PowerMon).
    fn read(&mut self) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;
    /// Resolves when a connected link is lost (the device or BlueZ dropped it), so that it is
    /// re-established at once rather than at the next poll. Pending for ever while not
    /// connected, or for a transport that never loses links (the demo). Cancel-safe.
    fn lost(&mut self) -> impl Future<Output = ()> + Send;
}
