//! The seam between the radio and everything above it: a transport knows GATT (connect,
//! characteristics, subscribe, write, read, notifications, disconnect), never a device kind.
//! `ble/` (btleplug and BlueZ) and `demo/` (simulated peripherals) implement [`Transport`];
//! each kind's session (`devices/<kind>/session.rs`) speaks its protocol over it.
//!
//! A passive kind (one that only advertises, e.g. a Victron shunt's encrypted advertisements)
//! never connects: it `listen`s (a running scan, shared by every listener) and takes the
//! device's newest `advertisement`.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::secret::Passkey;
use uuid::Uuid;

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
    #[error("this transport cannot {0}")]
    Unsupported(&'static str),
}

/// Why a pairing failed. Each says what to do; the caller names the device and address.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PairError {
    #[error("this transport cannot pair")]
    Unsupported,
    #[error(
        "cannot reach BlueZ on the system D-Bus: {0} (fix: is bluetoothd running? `systemctl status bluetooth`)"
    )]
    NoBluez(String),
    #[error(
        "BlueZ refused us (fix: run blebatt as a user in group `bluetooth`, as the systemd unit does, or as root)"
    )]
    AccessDenied,
    #[error(
        "no Bluetooth adapter (fix: `bluetoothctl list` shows them; check the device's adapter)"
    )]
    NoAdapter,
    #[error(
        "not seen in a {}s scan (fix: is it powered and in range, and the phone app disconnected from it?)",
        after.as_secs()
    )]
    NotFound { after: Duration },
    #[error(
        "authentication failed: a wrong passkey, or a stale bond in BlueZ (fix: the passkey is its Bluetooth password; check it, then `bluetoothctl remove` the address and pair again)"
    )]
    AuthenticationFailed,
    #[error("the pairing was cancelled or rejected (fix: try again, close to the device)")]
    Canceled,
    #[error(
        "BlueZ already has a bond with it, yet it still echoes: the bond is stale or was made without the passkey (fix: `bluetoothctl remove` the address, then pair again)"
    )]
    StaleBond,
    #[error(
        "could not connect to pair: {0} (fix: is it in range, and the phone app disconnected from it?)"
    )]
    NoConnection(String),
    #[error("the pairing did not finish within {0:?} (fix: try again, close to the device)")]
    Timeout(Duration),
    #[error("{message} ({name})")]
    Bluez { name: String, message: String },
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

/// One characteristic the connected device offers, as service discovery found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharInfo {
    pub uuid: Uuid,
    /// The service it belongs to.
    pub service: Uuid,
    /// It accepts writes without response (else writes wait for the ATT response).
    pub write_without_response: bool,
}

/// How a write is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// ATT Write Request: the device acknowledges.
    WithResponse,
    /// ATT Write Command: no acknowledgement.
    WithoutResponse,
}

impl WriteMode {
    /// The mode a characteristic asks for: without response when it offers that (current
    /// dongles), else with response (older ones list only "write").
    pub fn for_characteristic(c: &CharInfo) -> Self {
        if c.write_without_response {
            WriteMode::WithoutResponse
        } else {
            WriteMode::WithResponse
        }
    }
}

/// A value a subscribed characteristic notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub characteristic: Uuid,
    pub value: Vec<u8>,
}

/// One advertisement's manufacturer data of the company listened for (the bytes after the
/// company id), and when it was heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub data: Vec<u8>,
    pub heard: tokio::time::Instant,
}

/// GATT access to one device: what `device/` and the sessions need from a radio.
///
/// Every method is bounded by the implementation's own timeouts; none blocks forever except
/// `notification`, which callers always wrap in a deadline.
pub trait Transport: Send + 'static {
    /// Connects and discovers services; returns the characteristics found. Nothing is
    /// subscribed yet: after every (re)connect, the kind's session subscribes what it needs.
    fn connect(&mut self) -> impl Future<Output = Result<Vec<CharInfo>, LinkError>> + Send;
    /// Disconnects (and cancels a connect in progress). Never fails: a link that is already
    /// gone is fine. Returns true when the device is known not to be connected any more,
    /// false when that could not be confirmed (e.g. BlueZ did not answer in time).
    fn disconnect(&mut self) -> impl Future<Output = bool> + Send;
    /// Turns on notifications of one characteristic (undone by `disconnect`).
    fn subscribe(
        &mut self,
        characteristic: Uuid,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Writes a value to a characteristic.
    fn write(
        &mut self,
        characteristic: Uuid,
        data: &[u8],
        mode: WriteMode,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Waits for the next notification of a subscribed characteristic.
    fn notification(&mut self) -> impl Future<Output = Result<Notification, LinkError>> + Send;
    /// Drops notifications that arrived and were not read yet (stale replies); returns how many.
    fn drain(&mut self) -> usize;
    /// One GATT read of a characteristic.
    fn read(
        &mut self,
        characteristic: Uuid,
    ) -> impl Future<Output = Result<Vec<u8>, LinkError>> + Send;
    /// Resolves when a connected link is lost (the device or BlueZ dropped it), so that it is
    /// re-established at once rather than at the next poll. Pending for ever while not
    /// connected, or for a transport that never loses links (the demo). Cancel-safe.
    fn lost(&mut self) -> impl Future<Output = ()> + Send;
    /// Starts listening, without connecting, for the device's advertisements that carry
    /// manufacturer data of `company` (keeping a scan running while anyone listens); undone by
    /// `disconnect`. Listening again starts afresh, so a scan BlueZ ended runs again.
    fn listen(&mut self, company: u16) -> impl Future<Output = Result<(), LinkError>> + Send {
        let _ = company;
        async { Err(LinkError::Unsupported("listen to advertisements")) }
    }
    /// Waits for an advertisement heard after the one returned last (or, the first time, after
    /// `listen`) and returns the newest heard. Callers bound it, or poll it once.
    fn advertisement(&mut self) -> impl Future<Output = Result<Advert, LinkError>> + Send {
        async { Err(LinkError::Unsupported("listen to advertisements")) }
    }
    /// Pairs (BLE passkey entry) with the device through the system's Bluetooth stack, which
    /// keeps the bond; while connected or not. A transport that cannot pair says so.
    fn pair(&mut self, passkey: Passkey) -> impl Future<Output = Result<(), PairError>> + Send {
        let _ = passkey;
        async { Err(PairError::Unsupported) }
    }
}

/// The part of a [`Transport`] a kind's session uses, object-safe: sessions are chosen at run
/// time from the registry, transports at compile time. Every [`Transport`] is one.
pub trait Gatt: Send {
    fn subscribe(&mut self, characteristic: Uuid) -> BoxFuture<'_, Result<(), LinkError>>;
    fn write<'a>(
        &'a mut self,
        characteristic: Uuid,
        data: &'a [u8],
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<(), LinkError>>;
    fn notification(&mut self) -> BoxFuture<'_, Result<Notification, LinkError>>;
    fn drain(&mut self) -> usize;
    fn read(&mut self, characteristic: Uuid) -> BoxFuture<'_, Result<Vec<u8>, LinkError>>;
    fn listen(&mut self, company: u16) -> BoxFuture<'_, Result<(), LinkError>>;
    fn advertisement(&mut self) -> BoxFuture<'_, Result<Advert, LinkError>>;
}

impl<T: Transport> Gatt for T {
    fn subscribe(&mut self, characteristic: Uuid) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(Transport::subscribe(self, characteristic))
    }

    fn write<'a>(
        &'a mut self,
        characteristic: Uuid,
        data: &'a [u8],
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(Transport::write(self, characteristic, data, mode))
    }

    fn notification(&mut self) -> BoxFuture<'_, Result<Notification, LinkError>> {
        Box::pin(Transport::notification(self))
    }

    fn drain(&mut self) -> usize {
        Transport::drain(self)
    }

    fn read(&mut self, characteristic: Uuid) -> BoxFuture<'_, Result<Vec<u8>, LinkError>> {
        Box::pin(Transport::read(self, characteristic))
    }

    fn listen(&mut self, company: u16) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(Transport::listen(self, company))
    }

    fn advertisement(&mut self) -> BoxFuture<'_, Result<Advert, LinkError>> {
        Box::pin(Transport::advertisement(self))
    }
}
