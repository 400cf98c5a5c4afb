//! The btleplug transport: the only code that names btleplug. Finds, connects, discovers,
//! subscribes, writes, reads, with a timeout on every await; turns btleplug errors into
//! [`LinkError`]s with a hint.
//!
//! btleplug behaviour designed around (see shared/notes/ble-testing.md):
//! - devices BlueZ already knows appear in `peripherals()` without a scan: scan only when the
//!   address is missing, bounded, and never while another scan of ours runs;
//! - connect/discover can hang: every call has our own timeout;
//! - after every reconnect services are discovered and notifications subscribed again;
//! - a link drop arrives as `CentralEvent::DeviceDisconnected`; we watch for it so a reply wait
//!   ends at once instead of at its timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{
    BDAddr, Central, CentralEvent, CharPropFlags, Characteristic, Manager as _, Peripheral as _,
    PeripheralProperties, ValueNotification, WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{Mutex, broadcast};
use uuid::Uuid;

mod listen;
pub mod pair;
mod twins;
mod watchdog;

use crate::device::DeviceSpec;
use crate::devices::{self, Advertised, Kind};
use crate::secret::Passkey;
use crate::transport::{
    Advert, Cause, CharInfo, Failure, FailureSender, LinkError, Notification, PairError, Transport,
    WriteMode,
};
use listen::{Hearing, Listeners, Membership, Scanner};
use twins::{Need, Twins};

/// Bound on starting and stopping a scan.
const SCAN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest we wait for BlueZ to find a device it does not know yet.
const SCAN_BOUND: Duration = Duration::from_secs(15);
/// How often we look at the peripheral list while scanning.
const SCAN_POLL: Duration = Duration::from_millis(250);
/// Connecting takes longer than a reply on real hardware; never bound it below this.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds at shutdown: StopNotify (politeness), then Disconnect (what matters: a JBD BMS
/// accepts one connection). Together they stay inside the device task's shutdown grace.
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_millis(300);
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

type Notifications = Pin<Box<dyn Stream<Item = ValueNotification> + Send>>;
/// btleplug's stream is Send but not Sync; the link is shared by reference across awaits, so
/// the stream sits in a Mutex we only ever reach through `get_mut` (no locking).
type SharedNotifications = std::sync::Mutex<Notifications>;

impl From<btleplug::Error> for LinkError {
    /// Keeps the error's identity: btleplug's own kinds, and the D-Bus error name of a BlueZ
    /// or bus error (bluez-async wraps `dbus::Error` in `btleplug::Error::Other`).
    fn from(e: btleplug::Error) -> Self {
        match e {
            btleplug::Error::NotConnected => LinkError::NotConnected,
            btleplug::Error::DeviceNotFound => LinkError::NotFound,
            btleplug::Error::PermissionDenied => LinkError::Bluetooth {
                cause: Cause::AccessDenied,
                name: None,
                message: "permission denied".into(),
            },
            btleplug::Error::Other(boxed) => {
                let dbus = boxed
                    .downcast_ref::<bluez_async::BluetoothError>()
                    .and_then(|b| match b {
                        bluez_async::BluetoothError::DbusError(d) => Some(d),
                        _ => None,
                    })
                    .or_else(|| boxed.downcast_ref::<dbus::Error>());
                match dbus {
                    Some(d) => {
                        let message = d.message().unwrap_or("D-Bus error");
                        match d.name() {
                            Some(dbus_names::NOT_CONNECTED) => LinkError::NotConnected,
                            Some(dbus_names::DOES_NOT_EXIST) => LinkError::NotFound,
                            name => LinkError::Bluetooth {
                                cause: cause_of(name, message),
                                name: name.map(str::to_string),
                                message: message.to_string(),
                            },
                        }
                    }
                    None => LinkError::Bluetooth {
                        cause: Cause::Other,
                        name: None,
                        message: boxed.to_string(),
                    },
                }
            }
            other => LinkError::Bluetooth {
                cause: Cause::Other,
                name: None,
                message: other.to_string(),
            },
        }
    }
}

/// D-Bus error names (BlueZ's from doc/org.bluez.Device.rst and friends; the bus's from the
/// D-Bus specification) and BlueZ's connect-failure reason codes.
pub mod dbus_names {
    pub const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    pub const SERVICE_UNKNOWN: &str = "org.freedesktop.DBus.Error.ServiceUnknown";
    pub const NAME_HAS_NO_OWNER: &str = "org.freedesktop.DBus.Error.NameHasNoOwner";
    pub const NO_REPLY: &str = "org.freedesktop.DBus.Error.NoReply";
    pub const DISCONNECTED: &str = "org.freedesktop.DBus.Error.Disconnected";
    pub const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";
    pub const BLUEZ_FAILED: &str = "org.bluez.Error.Failed";
    pub const BLUEZ_NOT_READY: &str = "org.bluez.Error.NotReady";
    pub const BLUEZ_IN_PROGRESS: &str = "org.bluez.Error.InProgress";
    pub const NOT_CONNECTED: &str = "org.bluez.Error.NotConnected";
    pub const DOES_NOT_EXIST: &str = "org.bluez.Error.DoesNotExist";
    /// `org.bluez.Error.Failed` reason when an LE connection attempt is given up
    /// (BlueZ src/error.c, ERR_LE_CONN_ABORT_BY_LOCAL).
    pub const LE_CONNECTION_ABORT_BY_LOCAL: &str = "le-connection-abort-by-local";
}

/// What a D-Bus error means for the user.
fn cause_of(name: Option<&str>, message: &str) -> Cause {
    use dbus_names::*;
    match name {
        Some(ACCESS_DENIED) => Cause::AccessDenied,
        Some(SERVICE_UNKNOWN | NAME_HAS_NO_OWNER | NO_REPLY | DISCONNECTED) => {
            Cause::BluezUnavailable
        }
        Some(BLUEZ_NOT_READY) => Cause::AdapterNotReady,
        Some(BLUEZ_IN_PROGRESS) => Cause::InProgress,
        Some(BLUEZ_FAILED) if message == LE_CONNECTION_ABORT_BY_LOCAL => Cause::ConnectAborted,
        _ => Cause::Other,
    }
}

/// Runs a BlueZ call (btleplug's, or bluez-async's for [`twins`]) with a bound; a timeout
/// becomes [`LinkError::Timeout`].
async fn bounded<T, E: Into<LinkError>>(
    what: &'static str,
    after: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(LinkError::Timeout { what, after }),
    }
}

/// The Bluetooth side of the process: the adapters, one scan at a time, and the stream of
/// disconnect events fanned out to the links.
pub struct Bluetooth {
    adapters: Vec<(String, Adapter)>,
    /// Each adapter's shared scan (same order as `adapters`).
    scanners: Vec<Arc<Scanner>>,
    /// Passive devices listened for, on every adapter.
    listeners: Listeners,
    /// Characteristics btleplug cannot reach (a second one of the same UUID).
    twins: Twins,
    scan_lock: Arc<Mutex<()>>,
    disconnects: broadcast::Sender<LinkEvent>,
    /// Set when the Bluetooth side cannot recover; see [`Failure`].
    failure_tx: Arc<FailureSender>,
    failure: Failure,
}

impl Bluetooth {
    /// Connects to BlueZ over D-Bus (the system bus, or `DBUS_SYSTEM_BUS_ADDRESS`).
    pub async fn open() -> anyhow::Result<Self> {
        let bound = Duration::from_secs(10);
        let manager = bounded("opening BlueZ", bound, Manager::new())
            .await
            .map_err(|e| anyhow::anyhow!("{e}. Hint: is bluetoothd running, and may this user use it (group `bluetooth`)?"))?;
        let list = bounded("listing adapters", bound, manager.adapters()).await?;
        if list.is_empty() {
            anyhow::bail!(
                "no Bluetooth adapter found. Hint: `bluetoothctl list` should show one; is it powered (`rfkill list`)?"
            );
        }
        let (disconnects, _) = broadcast::channel(64);
        let (failure_tx, failure) = Failure::channel();
        let failure_tx = Arc::new(failure_tx);
        let mut adapters = Vec::new();
        let mut scanners = Vec::new();
        let listeners = Listeners::default();
        for adapter in list {
            let info = bounded("reading adapter info", bound, adapter.adapter_info())
                .await
                .unwrap_or_default();
            let name = info.split_whitespace().next().unwrap_or("").to_string();
            let events = bounded("subscribing to adapter events", bound, adapter.events()).await?;
            tokio::spawn(forward_events(
                events,
                disconnects.clone(),
                failure_tx.clone(),
                name.clone(),
                Some(Hearing::new(adapter.clone(), listeners.clone())),
            ));
            scanners.push(Scanner::new(adapter.clone(), SCAN_CALL_TIMEOUT));
            adapters.push((name, adapter));
        }
        Ok(Bluetooth {
            adapters,
            scanners,
            listeners,
            twins: Twins::default(),
            scan_lock: Arc::new(Mutex::new(())),
            disconnects,
            failure_tx,
            failure,
        })
    }

    /// Resolves when the Bluetooth side has failed for good.
    pub fn failure(&self) -> Failure {
        self.failure.clone()
    }

    /// Starts the watchdog over the adapters these devices use (see [`watchdog`]).
    pub fn watch(&self, devices: &[DeviceSpec]) {
        let mut used: Vec<(String, Adapter)> = Vec::new();
        for spec in devices {
            let Ok(adapter) = self.adapter(spec.adapter.as_deref()) else {
                continue;
            };
            let name = match spec.adapter.as_deref() {
                Some(n) => n.to_string(),
                None => self.adapters[0].0.clone(),
            };
            if !used.iter().any(|(n, _)| *n == name) {
                used.push((name, adapter));
            }
        }
        let probe = move || {
            let used = used.clone();
            async move {
                for (name, adapter) in &used {
                    adapter
                        .adapter_info()
                        .await
                        .map_err(|e| format!("adapter {name}: {}", LinkError::from(e)))?;
                }
                Ok(())
            }
        };
        let links = self.disconnects.clone();
        let answered = move || {
            let _ = links.send(LinkEvent::Recheck);
        };
        tokio::spawn(watchdog::watch(probe, answered, self.failure_tx.clone()));
    }

    fn adapter(&self, name: Option<&str>) -> anyhow::Result<Adapter> {
        self.adapter_index(name).map(|i| self.adapters[i].1.clone())
    }

    fn adapter_index(&self, name: Option<&str>) -> anyhow::Result<usize> {
        match name {
            None => Ok(0),
            Some(n) => self
                .adapters
                .iter()
                .position(|(a, _)| a == n)
                .ok_or_else(|| {
                    let have: Vec<_> = self.adapters.iter().map(|(a, _)| a.as_str()).collect();
                    anyhow::anyhow!("adapter {n:?} not found; this machine has {have:?}")
                }),
        }
    }

    /// A link for one configured device (not connected yet).
    pub async fn link(&self, spec: &DeviceSpec) -> anyhow::Result<BleLink> {
        let address: BDAddr = spec
            .address
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: bad address {}: {e}", spec.name, spec.address))?;
        let i = self.adapter_index(spec.adapter.as_deref())?;
        Ok(BleLink {
            adapter: self.adapters[i].1.clone(),
            scanner: self.scanners[i].clone(),
            listeners: self.listeners.clone(),
            listening: None,
            listen_scan: None,
            twins: self.twins.clone(),
            scan_lock: self.scan_lock.clone(),
            disconnects: self.disconnects.subscribe(),
            address,
            timeout: spec.timeout,
            conn: None,
            attempted: None,
            scan: None,
            adapter_name: spec.adapter.clone(),
        })
    }
}

/// Hands an adapter's link drops to the links. Without this stream no link drop is ever seen
/// again (a silent zombie), so its end, or a panic in here, is a [`Failure`].
async fn forward_events(
    mut events: impl Stream<Item = CentralEvent> + Unpin + Send,
    links: broadcast::Sender<LinkEvent>,
    failed: Arc<FailureSender>,
    adapter_name: String,
    mut hearing: Option<Hearing>,
) {
    let _ended = OnDrop::new(move || {
        let _ = failed.send(Some(format!(
            "the event stream of adapter {adapter_name} ended (BlueZ or the D-Bus connection is gone)"
        )));
    });
    while let Some(ev) = events.next().await {
        match ev {
            CentralEvent::DeviceDisconnected(id) => {
                let _ = links.send(LinkEvent::Disconnected(id));
            }
            CentralEvent::ManufacturerDataAdvertisement {
                id,
                manufacturer_data,
            } => {
                if let Some(h) = hearing.as_mut() {
                    h.heard(id, manufacturer_data).await;
                }
            }
            _ => {}
        }
    }
}

/// What the links hear from the Bluetooth side.
#[derive(Debug, Clone)]
enum LinkEvent {
    /// BlueZ says this peripheral's link dropped.
    Disconnected(PeripheralId),
    /// BlueZ just answered the watchdog: each link asks BlueZ whether it is still connected.
    /// A bluetoothd restart, or a missed signal, leaves no other trace.
    Recheck,
}

/// Runs a closure when dropped: at the end of a task, or when it panics.
struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnDrop<F> {
    fn new(f: F) -> Self {
        OnDrop(Some(f))
    }
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// What one connection has: the peripheral, its characteristics, what was subscribed and the
/// notification stream (opened at the first subscription).
struct Connection {
    peripheral: Peripheral,
    characteristics: Vec<Characteristic>,
    subscribed: Vec<Characteristic>,
    /// btleplug's notification stream and the twins' ones, merged.
    notifications: Option<SharedNotifications>,
    /// btleplug's stream is among them.
    btleplug_notifications: bool,
    /// Twins subscribed through bluez-async: their UUID and id (see [`twins`]).
    twin_subscribed: Vec<(Uuid, bluez_async::CharacteristicId)>,
    /// The twin written to instead of btleplug's characteristic of that UUID.
    twin_written: Vec<(Uuid, twins::Twin)>,
    lost: bool,
}

impl Connection {
    fn characteristic(&self, uuid: Uuid) -> Result<Characteristic, LinkError> {
        self.characteristics
            .iter()
            .find(|c| c.uuid == uuid)
            .cloned()
            .ok_or(LinkError::MissingCharacteristic("requested"))
    }

    /// Adds a stream to the notifications read.
    fn add_notifications(&mut self, stream: Notifications) {
        let merged: Notifications = match self.notifications.take() {
            Some(old) => match old.into_inner() {
                Ok(old) => Box::pin(futures::stream::select(old, stream)),
                Err(_) => stream,
            },
            None => stream,
        };
        self.notifications = Some(std::sync::Mutex::new(merged));
    }
}

/// A link to one device over BlueZ.
pub struct BleLink {
    adapter: Adapter,
    /// The adapter's shared scan: joined to find a device BlueZ does not know, and while
    /// listening.
    scanner: Arc<Scanner>,
    listeners: Listeners,
    /// A passive device: its advertisements.
    listening: Option<listen::Entry>,
    /// A passive device: our part of the scan.
    listen_scan: Option<Membership>,
    twins: Twins,
    scan_lock: Arc<Mutex<()>>,
    disconnects: broadcast::Receiver<LinkEvent>,
    address: BDAddr,
    timeout: Duration,
    conn: Option<Connection>,
    /// The peripheral of the last connect attempt that did not complete: `disconnect` must
    /// undo (or cancel) it, or a JBD BMS stays locked to us.
    attempted: Option<Peripheral>,
    /// Our part of the scan while searching for the device.
    scan: Option<Membership>,
    /// The configured adapter name, for pairing (BlueZ's own API).
    adapter_name: Option<String>,
}

impl BleLink {
    async fn known_peripheral(&self) -> Result<Option<Peripheral>, LinkError> {
        let list = bounded("listing devices", self.timeout, self.adapter.peripherals()).await?;
        Ok(list.into_iter().find(|p| p.address() == self.address))
    }

    /// Finds the peripheral, scanning (bounded, one scan at a time) only if BlueZ does not
    /// know it yet.
    async fn find(&mut self) -> Result<Peripheral, LinkError> {
        if let Some(p) = self.known_peripheral().await? {
            return Ok(p);
        }
        let _scan = self.scan_lock.lock().await;
        // Another device's scan may have found it meanwhile.
        if let Some(p) = self.known_peripheral().await? {
            return Ok(p);
        }
        log::debug!("{}: not known to BlueZ yet; scanning", self.address);
        // Held in the link, so that a stop that cancels this connect still leaves the scan
        // (in `disconnect`).
        if let Err(e) = self.scanner.join(&mut self.scan).await {
            log::debug!("start_scan: {e}");
        }
        let deadline = tokio::time::Instant::now() + SCAN_BOUND;
        let found = loop {
            match self.known_peripheral().await {
                Ok(Some(p)) => break Ok(p),
                Ok(None) if tokio::time::Instant::now() >= deadline => {
                    break Err(LinkError::NotFound);
                }
                Ok(None) => tokio::time::sleep(SCAN_POLL).await,
                Err(e) => break Err(e),
            }
        };
        listen::leave(&mut self.scan).await;
        found
    }

    fn connect_timeout(&self) -> Duration {
        self.timeout.max(MIN_CONNECT_TIMEOUT)
    }

    async fn open(&mut self) -> Result<Connection, LinkError> {
        let peripheral = self.find().await?;
        self.attempted = Some(peripheral.clone());
        let t = self.connect_timeout();
        if !bounded("connection check", t, peripheral.is_connected()).await? {
            bounded("connect", t, peripheral.connect()).await?;
        }
        bounded("service discovery", t, peripheral.discover_services()).await?;
        Ok(Connection {
            characteristics: peripheral.characteristics().into_iter().collect(),
            peripheral,
            subscribed: Vec::new(),
            notifications: None,
            btleplug_notifications: false,
            twin_subscribed: Vec::new(),
            twin_written: Vec::new(),
            lost: false,
        })
    }

    fn conn(&mut self) -> Result<&mut Connection, LinkError> {
        // Collect disconnect events for our peripheral.
        loop {
            match self.disconnects.try_recv() {
                Ok(LinkEvent::Disconnected(id)) => {
                    if let Some(c) = self.conn.as_mut().filter(|c| c.peripheral.id() == id) {
                        c.lost = true;
                    }
                }
                Ok(LinkEvent::Recheck) => {}
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        match self.conn.as_mut() {
            None => Err(LinkError::NotConnected),
            Some(c) if c.lost => Err(LinkError::Disconnected),
            Some(c) => Ok(c),
        }
    }
}

impl Transport for BleLink {
    async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
        // Drain events from before this connection.
        while !matches!(
            self.disconnects.try_recv(),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
        ) {}
        let conn = self.open().await?;
        self.attempted = None;
        let found = conn
            .characteristics
            .iter()
            .map(|c| CharInfo {
                uuid: c.uuid,
                service: c.service_uuid,
                write_without_response: c
                    .properties
                    .contains(CharPropFlags::WRITE_WITHOUT_RESPONSE),
            })
            .collect();
        self.conn = Some(conn);
        Ok(found)
    }

    async fn disconnect(&mut self) -> bool {
        listen::leave(&mut self.scan).await;
        self.listening = None;
        listen::leave(&mut self.listen_scan).await;
        // The peripheral we are, or may be becoming, connected to: a Connect still in flight
        // is cancelled by Device1.Disconnect (BlueZ documents this), so it is sent even when
        // BlueZ does not report the device connected yet.
        let peripheral = match self.conn.take() {
            Some(conn) => {
                for c in &conn.subscribed {
                    let _ =
                        tokio::time::timeout(UNSUBSCRIBE_TIMEOUT, conn.peripheral.unsubscribe(c))
                            .await;
                }
                for (_, twin) in &conn.twin_subscribed {
                    self.twins.unsubscribe(twin, UNSUBSCRIBE_TIMEOUT).await;
                }
                drop(conn.notifications);
                self.attempted = None;
                conn.peripheral
            }
            None => match self.attempted.take() {
                Some(p) => p,
                // Never got as far as a Connect: nothing to undo.
                None => return true,
            },
        };
        match tokio::time::timeout(DISCONNECT_TIMEOUT, peripheral.disconnect()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                let e = LinkError::from(e);
                log::debug!("{}: disconnect: {e}", self.address);
                // "Not connected" is the outcome we wanted; so is a device BlueZ forgot.
                matches!(e, LinkError::NotConnected | LinkError::NotFound)
            }
            Err(_) => {
                log::debug!("{}: disconnect timed out", self.address);
                false
            }
        }
    }

    async fn subscribe(&mut self, characteristic: Uuid) -> Result<(), LinkError> {
        let t = self.connect_timeout();
        let twins = self.twins.clone();
        let c = self.conn()?;
        let ch = c.characteristic(characteristic)?;
        if !Need::Notify.met_by(ch.properties) {
            // btleplug's one of this UUID does not notify: its twin does (see `twins`).
            let id = c.peripheral.id().to_string();
            let twin = twins
                .find(&id, ch.service_uuid, ch.uuid, Need::Notify, t)
                .await?;
            // As below: recorded before BlueZ answers.
            c.twin_subscribed.push((ch.uuid, twin.id.clone()));
            match twins.subscribe(&twin, ch.service_uuid, ch.uuid, t).await {
                Ok(stream) => c.add_notifications(stream),
                Err(e) => {
                    c.twin_subscribed.pop();
                    return Err(e);
                }
            }
            return Ok(());
        }
        if !c.btleplug_notifications {
            let stream = bounded("notification stream", t, c.peripheral.notifications()).await?;
            c.add_notifications(stream);
            c.btleplug_notifications = true;
        }
        // Counted as subscribed from the call on, so that a stop that cancels it while BlueZ
        // answers still unsubscribes at disconnect.
        c.subscribed.push(ch.clone());
        let r = bounded("subscribe", t, c.peripheral.subscribe(&ch)).await;
        if r.is_err() {
            c.subscribed.pop();
        }
        r
    }

    async fn write(
        &mut self,
        characteristic: Uuid,
        data: &[u8],
        mode: WriteMode,
    ) -> Result<(), LinkError> {
        let t = self.timeout;
        let twins = self.twins.clone();
        let c = self.conn()?;
        let ch = c.characteristic(characteristic)?;
        if !Need::Write.met_by(ch.properties) {
            // btleplug's one of this UUID is not writable: its twin is (see `twins`).
            let i = match c.twin_written.iter().position(|(u, _)| *u == ch.uuid) {
                Some(i) => i,
                None => {
                    let id = c.peripheral.id().to_string();
                    let twin = twins
                        .find(&id, ch.service_uuid, ch.uuid, Need::Write, t)
                        .await?;
                    c.twin_written.push((ch.uuid, twin));
                    c.twin_written.len() - 1
                }
            };
            return twins.write(&c.twin_written[i].1, data, mode, t).await;
        }
        let wt = match mode {
            WriteMode::WithResponse => WriteType::WithResponse,
            WriteMode::WithoutResponse => WriteType::WithoutResponse,
        };
        bounded("write", t, c.peripheral.write(&ch, data, wt)).await
    }

    async fn notification(&mut self) -> Result<Notification, LinkError> {
        let id = self.conn()?.peripheral.id();
        let Some(conn) = self.conn.as_mut() else {
            return Err(LinkError::NotConnected);
        };
        let stream = conn
            .notifications
            .as_mut()
            .ok_or(LinkError::MissingCharacteristic("subscribed"))?
            .get_mut()
            .map_err(|_| LinkError::NotConnected)?;
        let (subscribed, twins) = (&conn.subscribed, &conn.twin_subscribed);
        let wanted = |uuid: Uuid| {
            subscribed.iter().any(|c| c.uuid == uuid) || twins.iter().any(|(u, _)| *u == uuid)
        };
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(n) if wanted(n.uuid) => {
                        return Ok(Notification { characteristic: n.uuid, value: n.value });
                    }
                    Some(_) => continue,
                    None => {
                        conn.lost = true;
                        return Err(LinkError::Disconnected);
                    }
                },
                ev = self.disconnects.recv() => match ev {
                    Ok(LinkEvent::Disconnected(gone)) if gone == id => {
                        conn.lost = true;
                        return Err(LinkError::Disconnected);
                    }
                    _ => continue,
                },
            }
        }
    }

    fn drain(&mut self) -> usize {
        let Some(Ok(stream)) = self
            .conn
            .as_mut()
            .and_then(|c| c.notifications.as_mut())
            .map(|m| m.get_mut())
        else {
            return 0;
        };
        let mut n = 0;
        while let Some(Some(_)) = stream.next().now_or_never() {
            n += 1;
        }
        n
    }

    async fn lost(&mut self) {
        let Some(id) = self.conn.as_ref().map(|c| c.peripheral.id()) else {
            return std::future::pending().await;
        };
        if self.conn().is_err() {
            // Already known lost (or a disconnect event was waiting).
            return;
        }
        loop {
            match self.disconnects.recv().await {
                Ok(LinkEvent::Disconnected(gone)) if gone == id => break,
                Ok(LinkEvent::Disconnected(_)) => {}
                // Missed events (one of them may have been ours), or the watchdog asking
                // (a bluetoothd restart sends no disconnect event): BlueZ knows.
                Ok(LinkEvent::Recheck) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let p = self.conn.as_ref().map(|c| c.peripheral.clone());
                    if let Some(p) = p
                        && let Ok(Ok(false)) =
                            tokio::time::timeout(self.timeout, p.is_connected()).await
                    {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            }
        }
        if let Some(c) = self.conn.as_mut() {
            c.lost = true;
        }
    }

    async fn read(&mut self, characteristic: Uuid) -> Result<Vec<u8>, LinkError> {
        let t = self.timeout;
        let c = self.conn()?;
        let ch = c.characteristic(characteristic)?;
        bounded("read", t, c.peripheral.read(&ch)).await
    }

    async fn listen(&mut self, company: u16) -> Result<(), LinkError> {
        // Afresh each time (a session listens again when its device went silent): our part of
        // a scan BlueZ may have ended is left, and a new one started; other users keep theirs.
        self.listening = None;
        listen::leave(&mut self.listen_scan).await;
        let entry = self.listeners.add(self.address, company);
        let started = self.scanner.join(&mut self.listen_scan).await;
        self.listening = Some(entry);
        started
    }

    async fn advertisement(&mut self) -> Result<Advert, LinkError> {
        match self.listening.as_mut() {
            Some(entry) => entry.next().await,
            None => Err(LinkError::NotConnected),
        }
    }

    async fn pair(&mut self, passkey: Passkey) -> Result<(), PairError> {
        // Called because the device echoes: a bond BlueZ already has is not one that works.
        match pair::pair(
            &self.address.to_string(),
            self.adapter_name.as_deref(),
            passkey,
        )
        .await?
        {
            pair::Paired::Now => Ok(()),
            pair::Paired::Already => Err(PairError::StaleBond),
        }
    }
}

/// The kind a scanned device looks like (see [`devices::recognise`]), if any.
pub fn classify(props: &PeripheralProperties) -> Option<&'static Kind> {
    let name = props
        .local_name
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let manufacturers: Vec<u16> = props.manufacturer_data.keys().copied().collect();
    devices::recognise(&Advertised {
        name: &name,
        services: &props.services,
        manufacturers: &manufacturers,
    })
}

/// One device seen by [`scan`].
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRow {
    /// Upper-case `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Signal strength, dBm, when BlueZ has one.
    pub rssi: Option<i16>,
    /// The kind it looks like, if any: see [`classify`].
    pub kind: Option<&'static Kind>,
    /// Its advertised name (empty when none).
    pub name: String,
}

/// Scans for `seconds` (if BlueZ lets us; else lists what it already knows) and returns every
/// device the first adapter knows, one row each, in no particular order.
pub async fn scan(seconds: u64) -> anyhow::Result<Vec<ScanRow>> {
    let bt = Bluetooth::open().await?;
    let i = bt.adapter_index(None)?;
    let adapter = bt.adapters[i].1.clone();
    let t = SCAN_CALL_TIMEOUT;
    let mut scan = None;
    if let Err(e) = bt.scanners[i].join(&mut scan).await {
        log::warn!("could not start a scan ({e}); listing the devices BlueZ already knows");
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    listen::leave(&mut scan).await;
    let mut rows: HashMap<BDAddr, ScanRow> = HashMap::new();
    for p in bounded("listing devices", t, adapter.peripherals()).await? {
        if let Ok(Some(props)) = bounded("reading properties", t, p.properties()).await {
            rows.insert(
                p.address(),
                ScanRow {
                    address: p.address().to_string().to_uppercase(),
                    rssi: props.rssi,
                    kind: classify(&props),
                    name: props.local_name.clone().unwrap_or_default(),
                },
            );
        }
    }
    Ok(rows.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::dbus_names::*;
    use super::*;

    #[test]
    fn a_cause_is_read_from_the_error_name_and_the_reason_code_only() {
        let cases = [
            (
                Some(ACCESS_DENIED),
                "Rejected send message",
                Cause::AccessDenied,
            ),
            (Some(SERVICE_UNKNOWN), "", Cause::BluezUnavailable),
            (Some(NAME_HAS_NO_OWNER), "", Cause::BluezUnavailable),
            (Some(NO_REPLY), "", Cause::BluezUnavailable),
            (Some(DISCONNECTED), "", Cause::BluezUnavailable),
            (
                Some(BLUEZ_NOT_READY),
                "Resource Not Ready",
                Cause::AdapterNotReady,
            ),
            (Some(BLUEZ_IN_PROGRESS), "In Progress", Cause::InProgress),
            (
                Some(BLUEZ_FAILED),
                LE_CONNECTION_ABORT_BY_LOCAL,
                Cause::ConnectAborted,
            ),
            // Any other BlueZ "Failed" is not an aborted connect.
            (Some(BLUEZ_FAILED), "Input/output error", Cause::Other),
            // The reason code under another error name means nothing.
            (
                Some(NOT_CONNECTED),
                LE_CONNECTION_ABORT_BY_LOCAL,
                Cause::Other,
            ),
            (None, "Rejected send message", Cause::Other),
        ];
        for (name, message, want) in cases {
            assert_eq!(cause_of(name, message), want, "{name:?} {message:?}");
        }
    }

    /// The forwarder over `events`, and the failure it reports.
    async fn forwarder_failure(
        events: impl Stream<Item = CentralEvent> + Unpin + Send + 'static,
    ) -> String {
        let (failed, mut failure) = Failure::channel();
        let (links, _) = broadcast::channel(4);
        let task = tokio::spawn(forward_events(
            events,
            links,
            Arc::new(failed),
            "hci0".into(),
            None,
        ));
        let _ = task.await;
        tokio::time::timeout(Duration::from_secs(30), failure.wait())
            .await
            .expect("the forwarder's end was not reported")
    }

    #[tokio::test]
    async fn an_adapter_event_stream_that_ends_is_a_failure() {
        let reason = forwarder_failure(futures::stream::empty()).await;
        assert!(
            reason.contains("the event stream of adapter hci0 ended"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn an_adapter_event_stream_that_panics_is_a_failure() {
        // As bluez-async's own stream task does when its D-Bus connection breaks.
        let panicking = futures::stream::poll_fn(|_| -> std::task::Poll<Option<CentralEvent>> {
            panic!("Failed to send message")
        });
        let reason = forwarder_failure(panicking).await;
        assert!(reason.contains("adapter hci0 ended"), "{reason}");
    }
}
