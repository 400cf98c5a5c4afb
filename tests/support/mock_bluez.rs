//! A mock BlueZ (`org.bluez`) served with zbus on a (private) bus, for btleplug/bluez-async.
//!
//! It runs on its own tokio runtime (one worker thread, "mock-bluez"); tests drive it through
//! the synchronous [`MockBluez`] handle, which may be used from plain `#[test]` functions or
//! from inside another runtime (it never calls `block_on`).
//!
//! Objects (what bluez-async 0.9 / btleplug 0.13 / bleak read; see
//! /work/shared/notes/ble-testing.md):
//! - `/` ObjectManager
//! - `/org/bluez/hci0` Adapter1
//! - `/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01` Device1
//! - `.../service0010` GattService1, `.../service0010/char00NN` GattCharacteristic1.
//!   Like BlueZ for an unpaired LE device, GATT objects appear while connecting (before
//!   `ServicesResolved` turns true) and are removed on disconnect, unless the device is
//!   configured with `gatt_cached`.
//!
//! Behaviour mirrors BlueZ where it matters to a client: `org.bluez.Error.*` names,
//! `StartDiscovery` twice from one client -> `InProgress`, a write whose `type` option the
//! characteristic does not support -> `NotSupported`, GATT calls while disconnected ->
//! `Failed: Not connected`, `StopNotify` without a session -> `Failed: No notify session started`.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    sync::{Arc, Condvar, Mutex, MutexGuard, mpsc},
    time::{Duration, Instant},
};

use zbus::{
    Connection, OwnedObjectPath, OwnedVariant as OwnedValue, Variant as Value, interface,
    message::Header,
};

pub const BLUEZ_NAME: &str = "org.bluez";
pub const ADAPTER_PATH: &str = "/org/bluez/hci0";
pub const ADAPTER_ADDRESS: &str = "00:1A:7D:DA:71:13";

pub const JBD_SERVICE: &str = "0000ff00-0000-1000-8000-00805f9b34fb";
pub const JBD_NOTIFY: &str = "0000ff01-0000-1000-8000-00805f9b34fb";
pub const JBD_WRITE: &str = "0000ff02-0000-1000-8000-00805f9b34fb";
pub const JBD_ALT_SERVICE: &str = "0000fff0-0000-1000-8000-00805f9b34fb";
pub const JBD_ALT_NOTIFY: &str = "0000fff1-0000-1000-8000-00805f9b34fb";
pub const JBD_ALT_WRITE: &str = "0000fff2-0000-1000-8000-00805f9b34fb";
pub const JK_SERVICE: &str = "0000ffe0-0000-1000-8000-00805f9b34fb";
pub const JK_CHAR: &str = "0000ffe1-0000-1000-8000-00805f9b34fb";
pub const POWERMON_OLD_SERVICE: &str = "7a95ce00-0ea8-1bcc-71a2-fc7539b81c9c";
pub const POWERMON_OLD_CHAR: &str = "7a95ce01-0ea8-1bcc-71a2-fc7539b81c9c";
pub const POWERMON_NEW_SERVICE: &str = "ec7c0000-2c7b-1539-172f-29d041beab3e";
pub const POWERMON_NEW_CHAR: &str = "ec7c0001-2c7b-1539-172f-29d041beab3e";

const DEVICE1: &str = "org.bluez.Device1";
const ADAPTER1: &str = "org.bluez.Adapter1";
const GATT_CHAR1: &str = "org.bluez.GattCharacteristic1";
const MAX_EVENTS: usize = 200_000;

// ---------------------------------------------------------------------------------------------
// Frames

/// JBD checksum: (0x10000 - sum(bytes)) & 0xFFFF.
pub fn jbd_checksum(bytes: &[u8]) -> u16 {
    let sum: u32 = bytes.iter().map(|&b| u32::from(b)).sum();
    (0x1_0000u32.wrapping_sub(sum) & 0xFFFF) as u16
}

/// A JBD reply frame `DD reg status len data chk_hi chk_lo 77`; the checksum covers status,
/// len and data (not reg).
pub fn jbd_frame(reg: u8, status: u8, data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= 255, "JBD data too long");
    let mut f = Vec::with_capacity(data.len() + 7);
    f.extend_from_slice(&[0xDD, reg, status, data.len() as u8]);
    f.extend_from_slice(data);
    let chk = jbd_checksum(&f[2..]);
    f.extend_from_slice(&chk.to_be_bytes());
    f.push(0x77);
    f
}

/// A JBD read request `DD A5 reg 00 chk_hi chk_lo 77`.
pub fn jbd_read_request(reg: u8) -> Vec<u8> {
    let chk = jbd_checksum(&[reg, 0]);
    let [hi, lo] = chk.to_be_bytes();
    vec![0xDD, 0xA5, reg, 0x00, hi, lo, 0x77]
}

/// The register of a valid read request, else `None`.
pub fn parse_jbd_read_request(b: &[u8]) -> Option<u8> {
    if b.len() == 7 && b[0] == 0xDD && b[1] == 0xA5 && b[3] == 0 && b[6] == 0x77 {
        let chk = u16::from_be_bytes([b[4], b[5]]);
        if chk == jbd_checksum(&b[2..4]) {
            return Some(b[2]);
        }
    }
    None
}

/// Object path of a device: `/org/bluez/hci0/dev_AA_BB_CC_DD_EE_01`.
pub fn device_path(mac: &str) -> String {
    format!("{ADAPTER_PATH}/dev_{}", norm_mac(mac).replace(':', "_"))
}

fn norm_mac(mac: &str) -> String {
    mac.trim().to_ascii_uppercase()
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// Faults of one device; all off by default. Set them at any time with [`MockBluez::set_faults`]
/// or [`MockBluez::update_faults`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Sizes of successive notifications of a reply frame, cycled (e.g. `[7, 13, 1, 20]`);
    /// empty = 20-byte chunks (MTU 23). The pattern restarts for each frame.
    pub chunk_sizes: Vec<usize>,
    /// Wait before the first notification of a reply (or before a read returns).
    pub reply_delay: Duration,
    /// Wait between notifications (a connection interval); zero by default.
    pub chunk_gap: Duration,
    /// Accept writes but never answer (a read then hangs for 60 s and fails).
    pub silent: bool,
    /// Emitted as a notification of its own before each reply.
    pub garbage_before: Vec<u8>,
    /// The next N replies get a wrong checksum (PowerMon: one record byte altered).
    pub corrupt_checksum_next: u32,
    /// Before each of the next N replies, first send the reply of a different register (the
    /// previously asked one if it differs, else another configured register).
    pub stale_next: u32,
    /// Once: after that many notifications of a reply (0 = before the first), drop the link
    /// (PropertiesChanged Notifying=false, ServicesResolved=false, Connected=false; GATT objects
    /// removed). Cleared when it fires. PowerMon: the next read drops the link and fails.
    pub drop_link_after_chunks: Option<usize>,
    /// Every Nth poll (JBD: read request of register 0x03; PowerMon: a read), drop the link
    /// after the first notification of the reply (PowerMon: instead of answering).
    pub drop_link_every_polls: Option<u32>,
    /// The next K `Connect` calls fail with `org.bluez.Error.Failed: le-connection-abort-by-local`.
    pub refuse_connects: u32,
    /// `Connect` takes this long (also when refused).
    pub connect_delay: Duration,
    /// `Disconnect` takes this long before it acts (a BlueZ slow to tear a link down).
    pub disconnect_delay: Duration,
    /// `StartNotify` answers this long after it acts (the notify session exists from the
    /// call on: bluetoothd answers once the CCC write is acknowledged).
    pub start_notify_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JbdUuids {
    /// Service ff00, notify ff01, write ff02.
    Ff00,
    /// Service fff0, notify fff1, write fff2 (e.g. JBD-DH04SC02 dongles).
    Fff0,
}

/// What a JBD dongle wants before it answers read requests.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum JbdAuth {
    /// Nothing: it answers at once, and ignores `FF AA` frames.
    #[default]
    Open,
    /// The `FF AA` app-password handshake, on each connection: 0x15 app key "000000" (answer
    /// 00), 0x17 random byte, 0x18 password encrypted with its address and that byte (ACK/
    /// NACK), 0x1D the vendor's root password likewise (ACK/NACK). Only after both are
    /// accepted on this connection are read requests answered.
    Password(String),
    /// Pairing firmware: until a passkey-authenticated bond exists (`Device1.Pair` through a
    /// keyboard agent that gives this passkey), every write comes back as it was written.
    Pairing { passkey: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerMonFirmware {
    /// Service 7a95ce00-..., 52-byte record.
    Old,
    /// Service ec7c0000-..., 54-byte COBS-framed value.
    New,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DeviceKind {
    Jbd {
        uuids: JbdUuids,
        /// Flags of the write characteristic: "write-without-response" and/or "write".
        write_flags: Vec<String>,
        /// register -> full reply frame.
        replies: BTreeMap<u8, Vec<u8>>,
        /// What the dongle wants before it answers read requests.
        auth: JbdAuth,
    },
    PowerMon {
        firmware: PowerMonFirmware,
        record: Vec<u8>,
    },
    /// A JK BMS (JK02): `AA 55 90 EB 97 ..` gets `device_info`; `.. 96 ..` gets a settings
    /// record and `cell_info`, then `cell_info` again every `stream_every` while the link
    /// lasts. Records go out in `Faults::chunk_sizes` pieces; `Faults::silent` stops it all.
    Jk {
        device_info: Vec<u8>,
        cell_info: Vec<u8>,
        stream_every: Duration,
        /// The newer module: TWO `ffe1` characteristics, one written (write, write without
        /// response) and one notifying (read, notify), in this order of object paths (BlueZ
        /// lists them so); `None`: one ffe1 for both.
        twin_ffe1: Option<TwinOrder>,
    },
    /// A Victron device's instant readout: while anyone discovers, every `every` a new
    /// advertisement (ManufacturerData 0x02E1, PropertiesChanged) with the next nonce, the
    /// record `plaintext` encrypted with `key` (AES-128-CTR, its own implementation here).
    /// No GATT. `Faults::silent` stops it advertising.
    Victron {
        key: [u8; 16],
        product_id: u16,
        record_type: u8,
        plaintext: Vec<u8>,
        every: Duration,
    },
}

/// Which of the newer JK module's two `ffe1` BlueZ lists first (the lower object path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwinOrder {
    NotifyFirst,
    WriteFirst,
}

/// Victron's company id (manufacturer data key).
pub const VICTRON_COMPANY: u16 = 0x02E1;

/// A Victron instant readout advertisement, as the device builds it: `10 02`, product id
/// (LE), record type, nonce (LE), the key's first byte, then the plaintext encrypted with
/// AES-128-CTR whose counter block starts as the nonce (LE) and zeros.
pub fn victron_advert(
    key: &[u8; 16],
    product_id: u16,
    record_type: u8,
    nonce: u16,
    plaintext: &[u8],
) -> Vec<u8> {
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    let cipher = aes::Aes128::new(key.into());
    let mut out = vec![0x10, 0x02];
    out.extend(product_id.to_le_bytes());
    out.push(record_type);
    out.extend(nonce.to_le_bytes());
    out.push(key[0]);
    // CTR by hand: encrypt the counter blocks, XOR. The counter is a 128-bit little-endian
    // number starting at the nonce.
    let mut counter = u128::from(nonce);
    for chunk in plaintext.chunks(16) {
        let mut block = aes::Block::from(counter.to_le_bytes());
        cipher.encrypt_block(&mut block);
        out.extend(chunk.iter().zip(block.iter()).map(|(p, k)| p ^ k));
        counter = counter.wrapping_add(1);
    }
    out
}

#[derive(Clone, Debug, PartialEq)]
pub struct MockDevice {
    pub mac: String,
    pub name: String,
    pub kind: DeviceKind,
    /// Exported from the start (cached by BlueZ); else it appears on the first StartDiscovery.
    pub known: bool,
    pub rssi: i16,
    /// "public" or "random".
    pub address_type: String,
    /// Device1.UUIDs (advertised services).
    pub advertised_uuids: Vec<String>,
    /// ServicesResolved turns true this long after Connect returned.
    pub resolve_delay: Duration,
    /// Keep GATT objects exported while disconnected (as for a bonded device).
    pub gatt_cached: bool,
    /// GattCharacteristic1.MTU.
    pub mtu: u16,
    pub faults: Faults,
}

impl MockDevice {
    fn new(mac: &str, name: &str, kind: DeviceKind, adv: &str) -> Self {
        MockDevice {
            mac: norm_mac(mac),
            name: name.to_string(),
            kind,
            known: true,
            rssi: -67,
            address_type: "public".into(),
            advertised_uuids: vec![adv.to_string()],
            resolve_delay: Duration::from_millis(50),
            gatt_cached: false,
            mtu: 23,
            faults: Faults::default(),
        }
    }

    /// JBD BMS on ff00/ff01/ff02, write-without-response, no registers (every request gets
    /// `DD reg 80 00 FF 80 77`) until replies are added.
    pub fn jbd(mac: &str, name: &str) -> Self {
        Self::new(
            mac,
            name,
            DeviceKind::Jbd {
                uuids: JbdUuids::Ff00,
                write_flags: vec!["write-without-response".into()],
                replies: BTreeMap::new(),
                auth: JbdAuth::Open,
            },
            JBD_SERVICE,
        )
    }

    /// JBD BMS on fff0/fff1/fff2.
    pub fn jbd_fff0(mac: &str, name: &str) -> Self {
        let mut d = Self::jbd(mac, name);
        if let DeviceKind::Jbd { uuids, .. } = &mut d.kind {
            *uuids = JbdUuids::Fff0;
        }
        d.advertised_uuids = vec![JBD_ALT_SERVICE.into()];
        d
    }

    /// Thornwave PowerMon (random address type, as the real ones).
    pub fn powermon(mac: &str, name: &str, firmware: PowerMonFirmware, record: Vec<u8>) -> Self {
        let adv = match firmware {
            PowerMonFirmware::Old => POWERMON_OLD_SERVICE,
            PowerMonFirmware::New => POWERMON_NEW_SERVICE,
        };
        let mut d = Self::new(mac, name, DeviceKind::PowerMon { firmware, record }, adv);
        d.address_type = "random".into();
        d
    }

    /// A JK BMS streaming these 300-byte records (one ffe1 for write and notify).
    pub fn jk(mac: &str, name: &str, device_info: Vec<u8>, cell_info: Vec<u8>) -> Self {
        Self::new(
            mac,
            name,
            DeviceKind::Jk {
                device_info,
                cell_info,
                stream_every: Duration::from_millis(300),
                twin_ffe1: None,
            },
            JK_SERVICE,
        )
    }

    /// A Victron device advertising `plaintext` as a record of `record_type`, encrypted with
    /// `key_hex` (32 hex digits), every 100 ms while discovering.
    pub fn victron(
        mac: &str,
        name: &str,
        key_hex: &str,
        product_id: u16,
        record_type: u8,
        plaintext: Vec<u8>,
    ) -> Self {
        let key: [u8; 16] = hex::decode(key_hex).unwrap().try_into().unwrap();
        let mut d = Self::new(
            mac,
            name,
            DeviceKind::Victron {
                key,
                product_id,
                record_type,
                plaintext,
                every: Duration::from_millis(100),
            },
            "",
        );
        d.advertised_uuids = Vec::new();
        d
    }

    /// A JK BMS on the newer module: two `ffe1` characteristics (write-only, notify), the one
    /// `order` says first.
    pub fn with_twin_ffe1(mut self, order: TwinOrder) -> Self {
        if let DeviceKind::Jk { twin_ffe1, .. } = &mut self.kind {
            *twin_ffe1 = Some(order);
        }
        self
    }

    /// Not known to BlueZ: appears (InterfacesAdded) only after StartDiscovery.
    pub fn appears_on_scan(mut self) -> Self {
        self.known = false;
        self
    }

    /// Flags of the JBD write characteristic, e.g. `&["write"]`.
    pub fn with_write_flags(mut self, flags: &[&str]) -> Self {
        if let DeviceKind::Jbd { write_flags, .. } = &mut self.kind {
            *write_flags = flags.iter().map(|s| s.to_string()).collect();
        }
        self
    }

    pub fn with_reply(mut self, reg: u8, frame: Vec<u8>) -> Self {
        if let DeviceKind::Jbd { replies, .. } = &mut self.kind {
            replies.insert(reg, frame);
        }
        self
    }

    pub fn with_replies(mut self, map: BTreeMap<u8, Vec<u8>>) -> Self {
        if let DeviceKind::Jbd { replies, .. } = &mut self.kind {
            replies.extend(map);
        }
        self
    }

    /// A dongle that wants the `FF AA` handshake with this password.
    pub fn with_password(mut self, password: &str) -> Self {
        if let DeviceKind::Jbd { auth, .. } = &mut self.kind {
            *auth = JbdAuth::Password(password.into());
        }
        self
    }

    /// Pairing firmware: echoes until bonded with this passkey.
    pub fn with_pairing(mut self, passkey: u32) -> Self {
        if let DeviceKind::Jbd { auth, .. } = &mut self.kind {
            *auth = JbdAuth::Pairing { passkey };
        }
        self
    }

    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    pub fn with_rssi(mut self, rssi: i16) -> Self {
        self.rssi = rssi;
        self
    }

    pub fn with_resolve_delay(mut self, d: Duration) -> Self {
        self.resolve_delay = d;
        self
    }

    pub fn with_gatt_cached(mut self, cached: bool) -> Self {
        self.gatt_cached = cached;
        self
    }

    pub fn with_address_type(mut self, t: &str) -> Self {
        self.address_type = t.into();
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Events

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A Connect call arrived (it may still fail, be refused or be cancelled).
    ConnectCalled {
        mac: String,
    },
    /// A Connect call that succeeded.
    Connect {
        mac: String,
    },
    /// A Connect call failed because of `refuse_connects`.
    ConnectRefused {
        mac: String,
    },
    /// A Connect still in progress was cancelled by a Disconnect (BlueZ: "Disconnect ...
    /// also cancels a pending Connect"); the Connect call then fails.
    ConnectCancelled {
        mac: String,
    },
    /// A Disconnect call (whether or not the device was connected).
    Disconnect {
        mac: String,
    },
    /// The mock dropped the link (fault or [`MockBluez::drop_link`]).
    LinkDropped {
        mac: String,
    },
    StartNotify {
        mac: String,
        uuid: String,
    },
    StopNotify {
        mac: String,
        uuid: String,
    },
    /// An accepted WriteValue; `write_type` is the `type` option ("request"/"command"/"").
    Write {
        mac: String,
        bytes: Vec<u8>,
        write_type: String,
    },
    /// A WriteValue rejected (not connected, or a write type the characteristic lacks).
    WriteRejected {
        mac: String,
        bytes: Vec<u8>,
        write_type: String,
        error: String,
    },
    /// A ReadValue call (PowerMon record or other readable characteristic).
    Read {
        mac: String,
    },
    /// One notification sent (PropertiesChanged of Value on the notify characteristic).
    Notify {
        mac: String,
        bytes: Vec<u8>,
    },
    StartDiscovery,
    StopDiscovery,
    /// `org.bluez` went away ([`MockBluez::restart`] / [`MockBluez::stop`]).
    BluezStopped,
    /// `org.bluez` (re)appeared.
    BluezStarted,
    /// The adapter's properties were read (GetAll, or GetManagedObjects).
    AdapterRead,
    /// The adapter went away ([`MockBluez::remove_adapter`]).
    AdapterRemoved,
    /// A wedged BlueZ ([`MockBluez::start_wedged`]) took this call and will never answer it.
    CallIgnored {
        method: String,
    },
    /// `AgentManager1.RegisterAgent` / `UnregisterAgent` accepted.
    AgentRegistered {
        capability: String,
    },
    AgentUnregistered,
    /// `Device1.Pair` called.
    PairCalled {
        mac: String,
    },
    /// The registered agent answered `RequestPasskey` with this.
    PasskeyGiven {
        mac: String,
        passkey: u32,
    },
    /// A bond was made; `authenticated` when by passkey entry (else "Just Works").
    Paired {
        mac: String,
        authenticated: bool,
    },
    /// `Device1.Pair` failed with this error name.
    PairFailed {
        mac: String,
        error: String,
    },
}

impl EventKind {
    pub fn mac(&self) -> Option<&str> {
        match self {
            EventKind::Connect { mac }
            | EventKind::ConnectCalled { mac }
            | EventKind::ConnectRefused { mac }
            | EventKind::ConnectCancelled { mac }
            | EventKind::Disconnect { mac }
            | EventKind::LinkDropped { mac }
            | EventKind::StartNotify { mac, .. }
            | EventKind::StopNotify { mac, .. }
            | EventKind::Write { mac, .. }
            | EventKind::WriteRejected { mac, .. }
            | EventKind::Read { mac }
            | EventKind::Notify { mac, .. }
            | EventKind::PairCalled { mac }
            | EventKind::PasskeyGiven { mac, .. }
            | EventKind::Paired { mac, .. }
            | EventKind::PairFailed { mac, .. } => Some(mac),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockEvent {
    pub at: Instant,
    pub kind: EventKind,
}

impl MockEvent {
    pub fn mac(&self) -> Option<&str> {
        self.kind.mac()
    }

    /// True for an event of this device.
    pub fn is_for(&self, mac: &str) -> bool {
        self.mac().is_some_and(|m| m.eq_ignore_ascii_case(mac))
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state

struct DevState {
    cfg: MockDevice,
    /// Device1 is on the bus.
    exported: bool,
    gatt_exported: bool,
    connected: bool,
    connecting: bool,
    /// Bumped by a Disconnect that cancels a Connect in progress.
    connect_cancels: u64,
    /// Wakes a Connect in progress when it is cancelled.
    cancel: Arc<tokio::sync::Notify>,
    services_resolved: bool,
    notifying: bool,
    /// Bumped on every connect and link loss, so work of an older link stops.
    link_epoch: u64,
    last_reg: Option<u8>,
    polls: u64,
    rssi_tick: i16,
    char_values: HashMap<String, Vec<u8>>,
    /// Serialises connect completion, disconnects and link drops (object add/remove).
    link_lock: Arc<tokio::sync::Mutex<()>>,
    /// Serialises replies, so two replies never interleave.
    reply_lock: Arc<tokio::sync::Mutex<()>>,
    /// `FF AA` handshake: the last random byte given, and the link epoch on which the
    /// password / the root password were accepted.
    auth_random: u8,
    password_ok_epoch: Option<u64>,
    root_ok_epoch: Option<u64>,
    /// A bond exists, and whether it was passkey-authenticated (kept across reconnects;
    /// `RemoveDevice` forgets it).
    paired: bool,
    bond_authenticated: bool,
    /// JK: the link epoch whose cell info stream is running.
    jk_streaming: Option<u64>,
    /// Victron: the last nonce and advertisement sent (its ManufacturerData), and how many.
    victron_nonce: u16,
    manufacturer_data: Option<Vec<u8>>,
    adverts: u64,
}

impl DevState {
    fn new(cfg: MockDevice) -> Self {
        let mut char_values = HashMap::new();
        if let DeviceKind::PowerMon { record, .. } = &cfg.kind {
            for ch in layout(&cfg).1 {
                char_values.insert(ch.uuid.clone(), record.clone());
            }
        }
        DevState {
            exported: cfg.known,
            cfg,
            gatt_exported: false,
            connected: false,
            connecting: false,
            connect_cancels: 0,
            cancel: Arc::default(),
            services_resolved: false,
            notifying: false,
            link_epoch: 0,
            last_reg: None,
            polls: 0,
            rssi_tick: 0,
            char_values,
            link_lock: Arc::default(),
            reply_lock: Arc::default(),
            auth_random: 0x3B,
            password_ok_epoch: None,
            root_ok_epoch: None,
            paired: false,
            bond_authenticated: false,
            jk_streaming: None,
            victron_nonce: 0x4000,
            manufacturer_data: None,
            adverts: 0,
        }
    }
}

struct State {
    conn: Option<Connection>,
    /// Registered agents: client unique name -> (object path, capability).
    agents: HashMap<String, (String, String)>,
    generation: u64,
    powered: bool,
    /// Unique names of the clients that have a discovery session.
    discovering: HashSet<String>,
    /// Service UUIDs of the last SetDiscoveryFilter (lowercase; empty = no filter).
    scan_uuids: Vec<String>,
    /// rfkill blocks the adapter (see `MockBluez::set_rfkill_blocked`).
    rfkill_blocked: bool,
    /// How long StartDiscovery takes to answer (see `MockBluez::set_start_discovery_delay`).
    start_discovery_delay: Duration,
    devices: BTreeMap<String, DevState>,
    events: Vec<MockEvent>,
}

impl State {
    fn push(&mut self, kind: EventKind) {
        if self.events.len() >= MAX_EVENTS {
            self.events.drain(..MAX_EVENTS / 2);
        }
        self.events.push(MockEvent {
            at: Instant::now(),
            kind,
        });
    }

    fn dev(&mut self, mac: &str) -> Result<&mut DevState, BluezError> {
        self.devices
            .get_mut(mac)
            .ok_or_else(|| BluezError::DoesNotExist("Does Not Exist".into()))
    }
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, kind: EventKind) {
        self.lock().push(kind);
        self.cv.notify_all();
    }

    /// The connection of the current generation, if BlueZ is up and still that generation.
    fn conn_of(&self, generation: u64) -> Option<Connection> {
        let st = self.lock();
        if st.generation == generation {
            st.conn.clone()
        } else {
            None
        }
    }
}

type Sh = Arc<Shared>;

fn log(msg: &str) {
    eprintln!("[mock-bluez] {msg}");
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.bluez.Error")]
pub enum BluezError {
    #[zbus(error)]
    ZBus(zbus::Error),
    Failed(String),
    InProgress(String),
    NotReady(String),
    NotSupported(String),
    NotPermitted(String),
    NotConnected(String),
    DoesNotExist(String),
    InvalidArguments(String),
    AlreadyExists(String),
    AuthenticationFailed(String),
    AuthenticationCanceled(String),
}

// ---------------------------------------------------------------------------------------------
// GATT layout

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CharRole {
    JbdNotify,
    JbdWrite,
    Record,
    /// JK's one ffe1: written and notifying.
    JkBoth,
    /// The newer JK module's two ffe1: the written one and the notifying one.
    JkWrite,
    JkNotify,
}

#[derive(Clone, Debug)]
struct CharLayout {
    suffix: &'static str,
    uuid: String,
    flags: Vec<String>,
    role: CharRole,
}

/// (service uuid, characteristics); the service is `service0010`.
fn layout(cfg: &MockDevice) -> (String, Vec<CharLayout>) {
    match &cfg.kind {
        DeviceKind::Jbd {
            uuids, write_flags, ..
        } => {
            let (s, n, w) = match uuids {
                JbdUuids::Ff00 => (JBD_SERVICE, JBD_NOTIFY, JBD_WRITE),
                JbdUuids::Fff0 => (JBD_ALT_SERVICE, JBD_ALT_NOTIFY, JBD_ALT_WRITE),
            };
            (
                s.into(),
                vec![
                    CharLayout {
                        suffix: "char0011",
                        uuid: n.into(),
                        flags: vec!["read".into(), "notify".into()],
                        role: CharRole::JbdNotify,
                    },
                    CharLayout {
                        suffix: "char0014",
                        uuid: w.into(),
                        flags: write_flags.clone(),
                        role: CharRole::JbdWrite,
                    },
                ],
            )
        }
        DeviceKind::PowerMon { firmware, .. } => {
            let (s, c) = match firmware {
                PowerMonFirmware::Old => (POWERMON_OLD_SERVICE, POWERMON_OLD_CHAR),
                PowerMonFirmware::New => (POWERMON_NEW_SERVICE, POWERMON_NEW_CHAR),
            };
            (
                s.into(),
                vec![CharLayout {
                    suffix: "char0014",
                    uuid: c.into(),
                    flags: vec!["read".into()],
                    role: CharRole::Record,
                }],
            )
        }
        DeviceKind::Victron { .. } => (String::new(), Vec::new()),
        DeviceKind::Jk {
            twin_ffe1: Some(order),
            ..
        } => {
            let (notify_at, write_at) = match order {
                TwinOrder::NotifyFirst => ("char0011", "char0014"),
                TwinOrder::WriteFirst => ("char0014", "char0011"),
            };
            (
                JK_SERVICE.into(),
                vec![
                    CharLayout {
                        suffix: notify_at,
                        uuid: JK_CHAR.into(),
                        flags: vec!["read".into(), "notify".into()],
                        role: CharRole::JkNotify,
                    },
                    CharLayout {
                        suffix: write_at,
                        uuid: JK_CHAR.into(),
                        flags: vec!["write-without-response".into(), "write".into()],
                        role: CharRole::JkWrite,
                    },
                ],
            )
        }
        DeviceKind::Jk { .. } => (
            JK_SERVICE.into(),
            vec![CharLayout {
                suffix: "char0011",
                uuid: JK_CHAR.into(),
                flags: vec![
                    "write-without-response".into(),
                    "write".into(),
                    "notify".into(),
                ],
                role: CharRole::JkBoth,
            }],
        ),
    }
}

fn service_path(mac: &str) -> String {
    format!("{}/service0010", device_path(mac))
}

fn char_path(mac: &str, suffix: &str) -> String {
    format!("{}/{suffix}", service_path(mac))
}

fn notify_char(cfg: &MockDevice) -> Option<CharLayout> {
    layout(cfg).1.into_iter().find(|c| {
        matches!(
            c.role,
            CharRole::JbdNotify | CharRole::JkBoth | CharRole::JkNotify
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Signals and object export

async fn emit_changed(conn: &Connection, path: &str, iface: &str, props: Vec<(&str, Value<'_>)>) {
    let changed: HashMap<&str, Value<'_>> = props.into_iter().collect();
    let body = (iface, changed, Vec::<&str>::new());
    if let Err(e) = conn
        .emit_signal(
            None::<&str>,
            path,
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            &body,
        )
        .await
    {
        log(&format!("PropertiesChanged {path} {iface}: {e}"));
    }
}

async fn export_device(conn: &Connection, sh: &Sh, mac: &str) {
    let path = device_path(mac);
    let iface = Device1 {
        sh: sh.clone(),
        mac: mac.to_string(),
    };
    if let Err(e) = conn.object_server().at(path.as_str(), iface).await {
        log(&format!("export {path}: {e}"));
    }
    let cached = sh
        .lock()
        .devices
        .get(mac)
        .is_some_and(|d| d.cfg.gatt_cached);
    if cached {
        export_gatt(conn, sh, mac).await;
    }
}

async fn export_gatt(conn: &Connection, sh: &Sh, mac: &str) {
    let cfg = {
        let mut st = sh.lock();
        let Some(d) = st.devices.get_mut(mac) else {
            return;
        };
        if d.gatt_exported {
            return;
        }
        d.gatt_exported = true;
        d.cfg.clone()
    };
    let (svc_uuid, chars) = layout(&cfg);
    if chars.is_empty() {
        // No GATT (a Victron device, as the mock models it).
        return;
    }
    let spath = service_path(mac);
    let svc = GattService1 {
        uuid: svc_uuid,
        device: owned_path(&device_path(mac)),
    };
    if let Err(e) = conn.object_server().at(spath.as_str(), svc).await {
        log(&format!("export {spath}: {e}"));
    }
    for ch in chars {
        let cpath = char_path(mac, ch.suffix);
        let iface = GattCharacteristic1 {
            sh: sh.clone(),
            mac: mac.to_string(),
            uuid: ch.uuid.clone(),
            service: owned_path(&spath),
            flags: ch.flags.clone(),
            role: ch.role,
            suffix: ch.suffix,
        };
        if let Err(e) = conn.object_server().at(cpath.as_str(), iface).await {
            log(&format!("export {cpath}: {e}"));
        }
    }
}

async fn unexport_gatt(conn: &Connection, sh: &Sh, mac: &str) {
    let cfg = {
        let mut st = sh.lock();
        let Some(d) = st.devices.get_mut(mac) else {
            return;
        };
        if !d.gatt_exported {
            return;
        }
        d.gatt_exported = false;
        d.cfg.clone()
    };
    for ch in layout(&cfg).1 {
        let _ = conn
            .object_server()
            .remove::<GattCharacteristic1, _>(char_path(mac, ch.suffix).as_str())
            .await;
    }
    let _ = conn
        .object_server()
        .remove::<GattService1, _>(service_path(mac).as_str())
        .await;
}

fn owned_path(p: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(p.to_string()).expect("valid object path")
}

/// Bring `org.bluez` up on `address`: serve all objects first, then take the name.
async fn come_up(sh: Sh, address: String) -> zbus::Result<()> {
    let conn = zbus::connection::Builder::address(address.as_str())
        .serve_at("/", zbus::fdo::ObjectManager)
        .serve_at(ADAPTER_PATH, Adapter1 { sh: sh.clone() })
        .serve_at("/org/bluez", AgentManager1 { sh: sh.clone() })
        .build()
        .await?;
    let macs: Vec<String> = {
        let mut st = sh.lock();
        st.generation += 1;
        st.conn = Some(conn.clone());
        st.powered = true;
        st.devices
            .iter()
            .filter(|(_, d)| d.exported)
            .map(|(m, _)| m.clone())
            .collect()
    };
    for mac in macs {
        export_device(&conn, &sh, &mac).await;
    }
    conn.request_name(BLUEZ_NAME).await?;
    sh.push(EventKind::BluezStarted);
    let generation = sh.lock().generation;
    tokio::spawn(forget_clients_that_leave(sh.clone(), conn, generation));
    Ok(())
}

/// As bluetoothd does: a client that leaves the bus loses its discovery session (the last
/// one's end stops discovering) and its agent (doc/org.bluez.Adapter.rst, StartDiscovery:
/// "the discovery will be stopped once the client that started it exits").
async fn forget_clients_that_leave(sh: Sh, conn: Connection, generation: u64) {
    use futures::StreamExt;
    fn rule() -> zbus::Result<zbus::MatchRule<'static>> {
        zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .member("NameOwnerChanged")
            .build()
    }
    let Ok(rule) = rule() else {
        return;
    };
    let Ok(mut changes) = zbus::MessageStream::for_match_rule(rule, &conn, None).await else {
        return;
    };
    while let Some(Ok(msg)) = changes.next().await {
        let Ok((name, _old, new)) = msg.body().deserialize::<(String, String, String)>() else {
            continue;
        };
        if !new.is_empty() || !name.starts_with(':') {
            continue;
        }
        let gone = name;
        let last = {
            let mut st = sh.lock();
            if st.generation != generation {
                return;
            }
            st.agents.remove(&gone);
            st.discovering.remove(&gone) && st.discovering.is_empty()
        };
        sh.cv.notify_all();
        if last {
            discovering_changed(&conn, false).await;
        }
    }
}

/// The adapter's `Discovering` property changed.
async fn discovering_changed(conn: &Connection, on: bool) {
    emit_changed(
        conn,
        ADAPTER_PATH,
        ADAPTER1,
        vec![("Discovering", Value::from(on))],
    )
    .await;
}

/// A bluetoothd that owns its name but answers nothing: every call is taken and left pending.
struct WedgedObjectManager {
    sh: Sh,
}

#[interface(name = "org.freedesktop.DBus.ObjectManager")]
impl WedgedObjectManager {
    async fn get_managed_objects(
        &self,
    ) -> HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>> {
        self.sh.push(EventKind::CallIgnored {
            method: "GetManagedObjects".into(),
        });
        std::future::pending().await
    }
}

async fn come_up_wedged(sh: Sh, address: String) -> zbus::Result<()> {
    let conn = zbus::connection::Builder::address(address.as_str())
        .serve_at("/", WedgedObjectManager { sh: sh.clone() })
        .name(BLUEZ_NAME)
        .build()
        .await?;
    sh.lock().conn = Some(conn);
    sh.push(EventKind::BluezStarted);
    Ok(())
}

/// `org.bluez` goes away: name released, connection closed, every link lost.
async fn go_away(sh: Sh) {
    let conn = {
        let mut st = sh.lock();
        st.generation += 1;
        st.discovering.clear();
        for d in st.devices.values_mut() {
            d.connected = false;
            d.connecting = false;
            d.services_resolved = false;
            d.notifying = false;
            d.gatt_exported = false;
            d.link_epoch += 1;
        }
        let conn = st.conn.take();
        if conn.is_some() {
            st.push(EventKind::BluezStopped);
        }
        conn
    };
    sh.cv.notify_all();
    if let Some(conn) = conn {
        let _ = conn.release_name(BLUEZ_NAME).await;
        let _ = conn.close().await;
    }
}

/// What a link loss changed, for [`announce_down`].
struct Down {
    generation: u64,
    was_connected: bool,
    was_notifying: bool,
    cfg: MockDevice,
}

/// The state side of a link loss or Disconnect, done at once under the state lock (so a call
/// that comes next already sees the device disconnected).
fn mark_down(st: &mut State, mac: &str, dropped: bool) -> Option<Down> {
    let generation = st.generation;
    let d = st.devices.get_mut(mac)?;
    let was_connected = d.connected;
    let was_notifying = d.notifying;
    d.connected = false;
    d.services_resolved = false;
    d.notifying = false;
    if was_connected {
        d.link_epoch += 1;
    }
    let cfg = d.cfg.clone();
    if dropped && was_connected {
        st.push(EventKind::LinkDropped {
            mac: mac.to_string(),
        });
    }
    Some(Down {
        generation,
        was_connected,
        was_notifying,
        cfg,
    })
}

/// The bus side of a link loss: PropertiesChanged Notifying=false, then ServicesResolved=false
/// and Connected=false, then GATT objects removed (unless cached). Call with the link lock held.
async fn announce_down(sh: &Sh, mac: &str, down: Down) {
    sh.cv.notify_all();
    let Some(conn) = sh.conn_of(down.generation) else {
        return;
    };
    if down.was_notifying
        && let Some(ch) = notify_char(&down.cfg)
    {
        emit_changed(
            &conn,
            &char_path(mac, ch.suffix),
            GATT_CHAR1,
            vec![("Notifying", Value::from(false))],
        )
        .await;
    }
    if down.was_connected {
        emit_changed(
            &conn,
            &device_path(mac),
            DEVICE1,
            vec![
                ("ServicesResolved", Value::from(false)),
                ("Connected", Value::from(false)),
            ],
        )
        .await;
    }
    if !down.cfg.gatt_cached {
        unexport_gatt(&conn, sh, mac).await;
    }
}

fn link_lock(sh: &Sh, mac: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
    sh.lock().devices.get(mac).map(|d| d.link_lock.clone())
}

/// Link loss or Disconnect, state and signals.
async fn disconnect_device(sh: Sh, mac: String, dropped: bool) {
    let Some(link) = link_lock(&sh, &mac) else {
        return;
    };
    let _guard = link.lock().await;
    let down = mark_down(&mut sh.lock(), &mac, dropped);
    if let Some(down) = down {
        announce_down(&sh, &mac, down).await;
    }
}

/// After Connect returned: export GATT objects, then ServicesResolved=true.
async fn resolve_services(sh: Sh, mac: String, generation: u64, epoch: u64, delay: Duration) {
    tokio::time::sleep(delay).await;
    let Some(link) = sh.lock().devices.get(&mac).map(|d| d.link_lock.clone()) else {
        return;
    };
    let _guard = link.lock().await;
    let still = |sh: &Sh| {
        let st = sh.lock();
        st.generation == generation
            && st
                .devices
                .get(&mac)
                .is_some_and(|d| d.connected && d.link_epoch == epoch)
    };
    if !still(&sh) {
        return;
    }
    let Some(conn) = sh.conn_of(generation) else {
        return;
    };
    export_gatt(&conn, &sh, &mac).await;
    {
        let mut st = sh.lock();
        match st.devices.get_mut(&mac) {
            Some(d) if d.connected && d.link_epoch == epoch => d.services_resolved = true,
            _ => return,
        }
    }
    emit_changed(
        &conn,
        &device_path(&mac),
        DEVICE1,
        vec![("ServicesResolved", Value::from(true))],
    )
    .await;
}

/// While discovering: announce devices not yet exported, then "advertise" (RSSI changes);
/// both limited to the service UUIDs of the discovery filter, if it has any.
async fn discovery_task(sh: Sh, generation: u64) {
    tokio::time::sleep(Duration::from_millis(30)).await;
    let Some(conn) = sh.conn_of(generation) else {
        return;
    };
    let new: Vec<String> = {
        let mut st = sh.lock();
        let filter = st.scan_uuids.clone();
        let macs: Vec<String> = st
            .devices
            .iter()
            .filter(|(_, d)| !d.exported && matches_filter(&d.cfg, &filter))
            .map(|(m, _)| m.clone())
            .collect();
        for m in &macs {
            if let Some(d) = st.devices.get_mut(m) {
                d.exported = true;
            }
        }
        macs
    };
    for mac in new {
        export_device(&conn, &sh, &mac).await;
    }
    for _ in 0..5 {
        let adverts: Vec<(String, i16)> = {
            let mut st = sh.lock();
            if st.generation != generation || st.discovering.is_empty() {
                return;
            }
            let filter = st.scan_uuids.clone();
            st.devices
                .iter_mut()
                .filter(|(_, d)| d.exported && !d.connected && matches_filter(&d.cfg, &filter))
                .map(|(m, d)| {
                    d.rssi_tick = (d.rssi_tick + 1) % 3;
                    (m.clone(), d.cfg.rssi - d.rssi_tick)
                })
                .collect()
        };
        for (mac, rssi) in adverts {
            emit_changed(
                &conn,
                &device_path(&mac),
                DEVICE1,
                vec![("RSSI", Value::from(rssi))],
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// While anyone discovers: each exported Victron device advertises, every `every`, with the
/// next nonce (PropertiesChanged ManufacturerData, as BlueZ with DuplicateData signals every
/// advertisement). Ends when discovery stops (a later StartDiscovery starts a new one).
async fn victron_adverts(sh: Sh, generation: u64) {
    loop {
        let (adverts, every) = {
            let mut st = sh.lock();
            if st.generation != generation || st.discovering.is_empty() {
                return;
            }
            let filter = st.scan_uuids.clone();
            let mut every = Duration::from_millis(100);
            let mut out = Vec::new();
            for (mac, d) in st.devices.iter_mut() {
                let DeviceKind::Victron {
                    key,
                    product_id,
                    record_type,
                    plaintext,
                    every: e,
                } = &d.cfg.kind
                else {
                    continue;
                };
                every = every.min(*e);
                if !d.exported || d.cfg.faults.silent || !matches_filter(&d.cfg, &filter) {
                    continue;
                }
                d.victron_nonce = d.victron_nonce.wrapping_add(1);
                let bytes =
                    victron_advert(key, *product_id, *record_type, d.victron_nonce, plaintext);
                d.manufacturer_data = Some(bytes.clone());
                d.adverts += 1;
                out.push((mac.clone(), bytes));
            }
            (out, every)
        };
        let Some(conn) = sh.conn_of(generation) else {
            return;
        };
        for (mac, bytes) in adverts {
            let data: HashMap<u16, Value<'_>> =
                HashMap::from([(VICTRON_COMPANY, Value::from(bytes))]);
            emit_changed(
                &conn,
                &device_path(&mac),
                DEVICE1,
                vec![("ManufacturerData", Value::from(data))],
            )
            .await;
        }
        sh.cv.notify_all();
        tokio::time::sleep(every).await;
    }
}

/// Whether a device's advertised UUIDs pass a discovery filter (empty = everything).
fn matches_filter(cfg: &MockDevice, uuids: &[String]) -> bool {
    uuids.is_empty()
        || cfg
            .advertised_uuids
            .iter()
            .any(|u| uuids.contains(&u.to_ascii_lowercase()))
}

enum Note {
    Garbage(Vec<u8>),
    Frame(Vec<u8>),
}

fn split(bytes: &[u8], pattern: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < bytes.len() {
        let n = if pattern.is_empty() {
            20
        } else {
            pattern[k % pattern.len()].max(1)
        };
        k += 1;
        let end = (i + n).min(bytes.len());
        out.push(bytes[i..end].to_vec());
        i = end;
    }
    out
}

/// The link a reply belongs to is still up and notifying (same BlueZ, same connection).
fn link_alive(sh: &Sh, mac: &str, generation: u64, epoch: u64) -> bool {
    let st = sh.lock();
    st.generation == generation
        && st
            .devices
            .get(mac)
            .is_some_and(|d| d.connected && d.notifying && d.link_epoch == epoch)
}

/// Answer a JBD read request with notifications, applying the device's faults.
async fn jbd_respond(sh: Sh, mac: String, reg: u8, generation: u64, epoch: u64) {
    // Let the WriteValue reply go out first, as on a real link.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let Some(reply_lock) = sh.lock().devices.get(&mac).map(|d| d.reply_lock.clone()) else {
        return;
    };
    let _guard = reply_lock.lock().await;
    let alive = |sh: &Sh| link_alive(sh, &mac, generation, epoch);
    if !alive(&sh) {
        return;
    }
    let (notes, faults, notify_path, notify_uuid, drop_after) = {
        let mut st = sh.lock();
        let Ok(d) = st.dev(&mac) else { return };
        if d.cfg.faults.silent {
            return;
        }
        let DeviceKind::Jbd { replies, .. } = &d.cfg.kind else {
            return;
        };
        let replies = replies.clone();
        let mut drop_after = d.cfg.faults.drop_link_after_chunks;
        if reg == 0x03 {
            d.polls += 1;
            if let Some(n) = d.cfg.faults.drop_link_every_polls
                && n > 0
                && d.polls % u64::from(n) == 0
            {
                drop_after = Some(1);
            }
        }
        let f = &mut d.cfg.faults;
        let mut notes = Vec::new();
        if !f.garbage_before.is_empty() {
            notes.push(Note::Garbage(f.garbage_before.clone()));
        }
        if f.stale_next > 0 {
            f.stale_next -= 1;
            let other = d
                .last_reg
                .filter(|&r| r != reg)
                .or_else(|| replies.keys().copied().find(|&r| r != reg))
                .unwrap_or(if reg == 0x03 { 0x04 } else { 0x03 });
            let frame = replies
                .get(&other)
                .cloned()
                .unwrap_or_else(|| jbd_frame(other, 0x80, &[]));
            notes.push(Note::Frame(frame));
        }
        let mut frame = replies
            .get(&reg)
            .cloned()
            .unwrap_or_else(|| jbd_frame(reg, 0x80, &[]));
        if f.corrupt_checksum_next > 0 {
            f.corrupt_checksum_next -= 1;
            let i = frame.len().saturating_sub(2);
            if i > 0 {
                frame[i] ^= 0x5A;
            }
        }
        notes.push(Note::Frame(frame));
        d.last_reg = Some(reg);
        let faults = d.cfg.faults.clone();
        let ch = notify_char(&d.cfg).expect("JBD has a notify characteristic");
        if drop_after == Some(0) && faults.drop_link_after_chunks == Some(0) {
            d.cfg.faults.drop_link_after_chunks = None;
        }
        (
            notes,
            faults,
            char_path(&mac, ch.suffix),
            ch.uuid,
            drop_after,
        )
    };
    if drop_after == Some(0) {
        disconnect_device(sh.clone(), mac.clone(), true).await;
        return;
    }
    if !faults.reply_delay.is_zero() {
        tokio::time::sleep(faults.reply_delay).await;
    }
    let mut frame_chunks = 0usize;
    for note in notes {
        let (chunks, counts) = match note {
            Note::Garbage(g) => (vec![g], false),
            Note::Frame(f) => (split(&f, &faults.chunk_sizes), true),
        };
        for chunk in chunks {
            if !alive(&sh) {
                return;
            }
            let Some(conn) = sh.conn_of(generation) else {
                return;
            };
            {
                let mut st = sh.lock();
                if let Some(d) = st.devices.get_mut(&mac) {
                    d.char_values.insert(notify_uuid.clone(), chunk.clone());
                }
                st.push(EventKind::Notify {
                    mac: mac.clone(),
                    bytes: chunk.clone(),
                });
            }
            sh.cv.notify_all();
            emit_changed(
                &conn,
                &notify_path,
                GATT_CHAR1,
                vec![("Value", Value::from(chunk))],
            )
            .await;
            if counts {
                frame_chunks += 1;
                if drop_after == Some(frame_chunks) {
                    {
                        let mut st = sh.lock();
                        if let Some(d) = st.devices.get_mut(&mac)
                            && d.cfg.faults.drop_link_after_chunks == Some(frame_chunks)
                        {
                            d.cfg.faults.drop_link_after_chunks = None;
                        }
                    }
                    disconnect_device(sh.clone(), mac.clone(), true).await;
                    return;
                }
            }
            if !faults.chunk_gap.is_zero() {
                tokio::time::sleep(faults.chunk_gap).await;
            }
        }
    }
}

/// `FF AA cmd len data sum`, sum = 8-bit sum of cmd, len and data.
fn ffaa_frame(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0xFF, 0xAA, cmd, data.len() as u8];
    f.extend_from_slice(data);
    let sum = data
        .iter()
        .fold(cmd.wrapping_add(data.len() as u8), |a, b| {
            a.wrapping_add(*b)
        });
    f.push(sum);
    f
}

/// A well-formed `FF AA` frame's command and data.
fn parse_ffaa(b: &[u8]) -> Option<(u8, &[u8])> {
    let (&cmd, rest) = b.strip_prefix(&[0xFF, 0xAA])?.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let (data, sum) = rest.split_at_checked(usize::from(len))?;
    (sum.len() == 1 && ffaa_frame(cmd, data) == b).then_some((cmd, data))
}

/// The dongle's encryption: each secret byte XOR the address byte (in display order; 0 past
/// the sixth), plus the random byte, mod 256.
fn jbd_encrypt(mac: &str, random: u8, secret: &[u8]) -> Vec<u8> {
    let m: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("a normalised address"))
        .collect();
    secret
        .iter()
        .enumerate()
        .map(|(i, &c)| (m.get(i).copied().unwrap_or(0) ^ c).wrapping_add(random))
        .collect()
}

const JBD_ROOT_PASSWORD: &[u8] = b"JBDbtpwd!@#2023";

/// The dongle's answer to a handshake frame (`None`: ignored), updating its state.
fn jbd_handshake(d: &mut DevState, mac: &str, epoch: u64, cmd: u8, data: &[u8]) -> Option<Vec<u8>> {
    let DeviceKind::Jbd {
        auth: JbdAuth::Password(password),
        ..
    } = &d.cfg.kind
    else {
        return None;
    };
    let verdict = |ok: bool| u8::from(!ok);
    let value = match cmd {
        0x15 => verdict(data == b"000000"),
        0x17 if data.is_empty() => {
            d.auth_random = d.auth_random.wrapping_mul(73).wrapping_add(0x29);
            d.auth_random
        }
        0x18 => {
            let ok = data == jbd_encrypt(mac, d.auth_random, password.as_bytes());
            d.password_ok_epoch = ok.then_some(epoch);
            verdict(ok)
        }
        0x1D => {
            let ok = data == jbd_encrypt(mac, d.auth_random, JBD_ROOT_PASSWORD);
            d.root_ok_epoch = ok.then_some(epoch);
            verdict(ok)
        }
        _ => {
            log(&format!("{mac}: ignoring FF AA command {cmd:02X}"));
            return None;
        }
    };
    Some(ffaa_frame(cmd, &[value]))
}

/// A write to a JBD's write characteristic: pairing firmware echoes it (until an
/// authenticated bond exists); a handshake frame gets its answer; a read request its reply
/// (on a password dongle only once the handshake succeeded on this link).
fn jbd_write(sh: &Sh, mac: String, value: Vec<u8>, generation: u64, epoch: u64) {
    let answer = {
        let mut st = sh.lock();
        let Ok(d) = st.dev(&mac) else { return };
        let DeviceKind::Jbd { auth, .. } = &d.cfg.kind else {
            return;
        };
        let auth = auth.clone();
        if matches!(auth, JbdAuth::Pairing { .. }) && !d.bond_authenticated {
            Some(value.clone())
        } else if let Some((cmd, data)) = parse_ffaa(&value) {
            match jbd_handshake(d, &mac, epoch, cmd, data) {
                Some(a) => Some(a),
                None => return,
            }
        } else if matches!(auth, JbdAuth::Password(_))
            && !(d.password_ok_epoch == Some(epoch) && d.root_ok_epoch == Some(epoch))
        {
            log(&format!(
                "{mac}: no handshake on this link: ignoring {value:02X?}"
            ));
            return;
        } else {
            None
        }
    };
    if let Some(bytes) = answer {
        tokio::spawn(notify_jbd(sh.clone(), mac, bytes, generation, epoch));
        return;
    }
    match parse_jbd_read_request(&value) {
        Some(reg) => {
            tokio::spawn(jbd_respond(sh.clone(), mac, reg, generation, epoch));
        }
        None => log(&format!(
            "{mac}: ignoring write that is not a JBD read request: {value:02X?}"
        )),
    }
}

/// JK's command frame: `AA 55 90 EB cmd 00 .. sum`, 20 bytes (the mock's own encoding).
fn jk_command(cmd: u8) -> Vec<u8> {
    let mut f = vec![0u8; 20];
    f[..5].copy_from_slice(&[0xAA, 0x55, 0x90, 0xEB, cmd]);
    f[19] = f[..19].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    f
}

/// An empty JK record of `kind` (the settings record the BMS sends before streaming).
fn jk_record(kind: u8) -> Vec<u8> {
    let mut r = vec![0u8; 300];
    r[..5].copy_from_slice(&[0x55, 0xAA, 0xEB, 0x90, kind]);
    r[299] = r[..299].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    r
}

/// A write to a JK's ffe1: device info, or settings + cell info and the stream.
fn jk_write(sh: &Sh, mac: String, value: Vec<u8>, generation: u64, epoch: u64) {
    let (device_info, cell_info, every, silent, start_stream) = {
        let mut st = sh.lock();
        let Ok(d) = st.dev(&mac) else { return };
        let DeviceKind::Jk {
            device_info,
            cell_info,
            stream_every,
            ..
        } = &d.cfg.kind
        else {
            return;
        };
        let out = (
            device_info.clone(),
            cell_info.clone(),
            *stream_every,
            d.cfg.faults.silent,
            d.jk_streaming != Some(epoch),
        );
        if value == jk_command(0x96) {
            d.jk_streaming = Some(epoch);
        }
        out
    };
    if silent {
        return;
    }
    let sh = sh.clone();
    if value == jk_command(0x97) {
        tokio::spawn(async move {
            send_record(&sh, &mac, &device_info, generation, epoch).await;
        });
    } else if value == jk_command(0x96) {
        tokio::spawn(async move {
            send_record(&sh, &mac, &jk_record(0x01), generation, epoch).await;
            if !send_record(&sh, &mac, &cell_info, generation, epoch).await || !start_stream {
                return;
            }
            // The BMS streams by itself from now on, while this link lasts.
            loop {
                tokio::time::sleep(every).await;
                let current = {
                    let st = sh.lock();
                    st.devices.get(&mac).and_then(|d| match &d.cfg.kind {
                        DeviceKind::Jk { cell_info, .. } if !d.cfg.faults.silent => {
                            Some(cell_info.clone())
                        }
                        _ => None,
                    })
                };
                let Some(cell_info) = current else { continue };
                if !send_record(&sh, &mac, &cell_info, generation, epoch).await {
                    return;
                }
            }
        });
    } else {
        log(&format!("{mac}: ignoring JK write {value:02X?}"));
    }
}

/// A record in `Faults::chunk_sizes` notifications; false once the link is gone. A record is
/// sent whole before any other (the BMS writes its records one after another to the module's
/// serial line): two requests in a row get two records, never their chunks interleaved.
async fn send_record(sh: &Sh, mac: &str, record: &[u8], generation: u64, epoch: u64) -> bool {
    let Some((sizes, reply_lock)) = sh
        .lock()
        .devices
        .get(mac)
        .map(|d| (d.cfg.faults.chunk_sizes.clone(), d.reply_lock.clone()))
    else {
        return false;
    };
    let _guard = reply_lock.lock().await;
    for chunk in split(record, &sizes) {
        if !link_alive(sh, mac, generation, epoch) {
            return false;
        }
        notify_unlocked(sh, mac, chunk, generation, epoch).await;
    }
    true
}

/// One notification on a JBD's notify characteristic, if that link is still up.
async fn notify_jbd(sh: Sh, mac: String, bytes: Vec<u8>, generation: u64, epoch: u64) {
    let Some(reply_lock) = sh.lock().devices.get(&mac).map(|d| d.reply_lock.clone()) else {
        return;
    };
    let _guard = reply_lock.lock().await;
    notify_unlocked(&sh, &mac, bytes, generation, epoch).await;
}

/// [`notify_jbd`] for a caller that holds the device's `reply_lock`.
async fn notify_unlocked(sh: &Sh, mac: &str, bytes: Vec<u8>, generation: u64, epoch: u64) {
    // Let the WriteValue reply go out first, as on a real link.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let path = {
        let mut st = sh.lock();
        if st.generation != generation {
            return;
        }
        let Ok(d) = st.dev(mac) else { return };
        if !(d.connected && d.notifying && d.link_epoch == epoch) {
            return;
        }
        let Some(ch) = notify_char(&d.cfg) else {
            return;
        };
        d.char_values.insert(ch.uuid.clone(), bytes.clone());
        st.push(EventKind::Notify {
            mac: mac.to_string(),
            bytes: bytes.clone(),
        });
        char_path(mac, ch.suffix)
    };
    sh.cv.notify_all();
    if let Some(conn) = sh.conn_of(generation) {
        emit_changed(
            &conn,
            &path,
            GATT_CHAR1,
            vec![("Value", Value::from(bytes))],
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// D-Bus interfaces

/// `org.bluez.AgentManager1` at `/org/bluez`: one agent per client (bus name).
struct AgentManager1 {
    sh: Sh,
}

const AGENT_CAPABILITIES: [&str; 6] = [
    "",
    "DisplayOnly",
    "DisplayYesNo",
    "KeyboardOnly",
    "NoInputNoOutput",
    "KeyboardDisplay",
];

#[interface(name = "org.bluez.AgentManager1", introspection_docs = false)]
impl AgentManager1 {
    async fn register_agent(
        &self,
        agent: OwnedObjectPath,
        capability: String,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BluezError> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        if !AGENT_CAPABILITIES.contains(&capability.as_str()) {
            return Err(BluezError::InvalidArguments("Invalid Arguments".into()));
        }
        let mut st = self.sh.lock();
        if st.agents.contains_key(&sender) {
            return Err(BluezError::AlreadyExists("Already Exists".into()));
        }
        st.agents
            .insert(sender, (agent.to_string(), capability.clone()));
        st.push(EventKind::AgentRegistered { capability });
        drop(st);
        self.sh.cv.notify_all();
        Ok(())
    }

    async fn unregister_agent(
        &self,
        agent: OwnedObjectPath,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BluezError> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let mut st = self.sh.lock();
        match st.agents.get(&sender) {
            Some((path, _)) if path == agent.as_str() => {
                st.agents.remove(&sender);
                st.push(EventKind::AgentUnregistered);
                drop(st);
                self.sh.cv.notify_all();
                Ok(())
            }
            _ => Err(BluezError::DoesNotExist("Does Not Exist".into())),
        }
    }

    async fn request_default_agent(
        &self,
        agent: OwnedObjectPath,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(), BluezError> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        match self.sh.lock().agents.get(&sender) {
            Some((path, _)) if path == agent.as_str() => Ok(()),
            _ => Err(BluezError::DoesNotExist("Does Not Exist".into())),
        }
    }
}

struct Adapter1 {
    sh: Sh,
}

#[interface(name = "org.bluez.Adapter1", introspection_docs = false)]
impl Adapter1 {
    async fn start_discovery(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), BluezError> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let (first, generation, delay) = {
            let mut st = self.sh.lock();
            if !st.powered {
                return Err(BluezError::NotReady("Resource Not Ready".into()));
            }
            if st.discovering.contains(&sender) {
                return Err(BluezError::InProgress(
                    "Operation already in progress".into(),
                ));
            }
            let first = st.discovering.is_empty();
            st.discovering.insert(sender);
            st.push(EventKind::StartDiscovery);
            (first, st.generation, st.start_discovery_delay)
        };
        self.sh.cv.notify_all();
        // bluetoothd answers once the controller has started (mgmt Start Discovery complete).
        tokio::time::sleep(delay).await;
        if let Some(conn) = self.sh.conn_of(generation) {
            if first {
                discovering_changed(&conn, true).await;
                tokio::spawn(victron_adverts(self.sh.clone(), generation));
            }
            tokio::spawn(discovery_task(self.sh.clone(), generation));
        }
        Ok(())
    }

    async fn stop_discovery(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), BluezError> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let (last, generation) = {
            let mut st = self.sh.lock();
            if !st.discovering.remove(&sender) {
                return Err(BluezError::Failed("No discovery started".into()));
            }
            st.push(EventKind::StopDiscovery);
            (st.discovering.is_empty(), st.generation)
        };
        self.sh.cv.notify_all();
        if last && let Some(conn) = self.sh.conn_of(generation) {
            discovering_changed(&conn, false).await;
        }
        Ok(())
    }

    async fn set_discovery_filter(&self, filter: HashMap<String, OwnedValue>) {
        let uuids = filter
            .get("UUIDs")
            .map(|v| match &**v {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| match x {
                        Value::Str(s) => Some(s.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        self.sh.lock().scan_uuids = uuids;
    }

    async fn get_discovery_filters(&self) -> Vec<String> {
        [
            "UUIDs",
            "RSSI",
            "Pathloss",
            "Transport",
            "DuplicateData",
            "Discoverable",
            "Pattern",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    async fn remove_device(&self, device: OwnedObjectPath) -> Result<(), BluezError> {
        let mac = {
            let st = self.sh.lock();
            st.devices
                .keys()
                .find(|m| device_path(m) == device.as_str())
                .cloned()
        };
        let Some(mac) = mac else {
            return Err(BluezError::DoesNotExist("Does Not Exist".into()));
        };
        let sh = self.sh.clone();
        // Off the handler: it removes objects.
        tokio::spawn(async move {
            disconnect_device(sh.clone(), mac.clone(), false).await;
            let generation = sh.lock().generation;
            if let Some(conn) = sh.conn_of(generation) {
                unexport_gatt(&conn, &sh, &mac).await;
                let _ = conn
                    .object_server()
                    .remove::<Device1, _>(device_path(&mac).as_str())
                    .await;
            }
            if let Some(d) = sh.lock().devices.get_mut(&mac) {
                d.exported = false;
                // BlueZ forgets the bond with the device.
                d.paired = false;
                d.bond_authenticated = false;
            }
        });
        Ok(())
    }

    #[zbus(property)]
    fn address(&self) -> String {
        // Read by every GetAll of the adapter (and GetManagedObjects).
        self.sh.push(EventKind::AdapterRead);
        ADAPTER_ADDRESS.into()
    }

    #[zbus(property)]
    fn address_type(&self) -> String {
        "public".into()
    }

    #[zbus(property)]
    fn name(&self) -> String {
        "mock-bluez".into()
    }

    #[zbus(property)]
    fn alias(&self) -> String {
        "mock-bluez".into()
    }

    #[zbus(property)]
    fn class(&self) -> u32 {
        0x0000_0000
    }

    #[zbus(property)]
    fn powered(&self) -> bool {
        self.sh.lock().powered
    }

    #[zbus(property)]
    fn set_powered(&self, value: bool) -> zbus::fdo::Result<()> {
        let mut st = self.sh.lock();
        if st.rfkill_blocked && value {
            // BlueZ's answer while rfkill blocks the adapter.
            return Err(zbus::fdo::Error::Failed("Blocked through rfkill".into()));
        }
        st.powered = value;
        Ok(())
    }

    #[zbus(property)]
    fn discoverable(&self) -> bool {
        false
    }

    #[zbus(property)]
    fn pairable(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn discovering(&self) -> bool {
        !self.sh.lock().discovering.is_empty()
    }

    #[zbus(property, name = "UUIDs")]
    fn uuids(&self) -> Vec<String> {
        vec![
            "00001800-0000-1000-8000-00805f9b34fb".into(),
            "00001801-0000-1000-8000-00805f9b34fb".into(),
        ]
    }

    #[zbus(property)]
    fn modalias(&self) -> String {
        "usb:v1D6Bp0246d0548".into()
    }

    #[zbus(property)]
    fn roles(&self) -> Vec<String> {
        vec!["central".into(), "peripheral".into()]
    }
}

struct Device1 {
    sh: Sh,
    mac: String,
}

impl Device1 {
    fn get<T>(&self, f: impl FnOnce(&DevState) -> T) -> Option<T> {
        self.sh.lock().devices.get(&self.mac).map(f)
    }
}

#[interface(name = "org.bluez.Device1", introspection_docs = false)]
impl Device1 {
    async fn connect(&self) -> Result<(), BluezError> {
        let mac = self.mac.clone();
        let (delay, refuse, generation, cancels, cancel) = {
            let mut st = self.sh.lock();
            st.push(EventKind::ConnectCalled { mac: mac.clone() });
            let generation = st.generation;
            let d = st.dev(&mac)?;
            if d.connected {
                return Ok(());
            }
            if d.connecting {
                return Err(BluezError::InProgress("In Progress".into()));
            }
            d.connecting = true;
            let refuse = d.cfg.faults.refuse_connects > 0;
            if refuse {
                d.cfg.faults.refuse_connects -= 1;
            }
            (
                d.cfg.faults.connect_delay,
                refuse,
                generation,
                d.connect_cancels,
                d.cancel.clone(),
            )
        };
        self.sh.cv.notify_all();
        if !delay.is_zero() {
            let cancelled = cancel.notified();
            tokio::pin!(cancelled);
            // Register before re-checking, so a cancel in between is not missed.
            cancelled.as_mut().enable();
            let already = self
                .sh
                .lock()
                .devices
                .get(&mac)
                .is_some_and(|d| d.connect_cancels != cancels);
            if !already {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = &mut cancelled => {}
                }
            }
        }
        {
            let mut st = self.sh.lock();
            if let Ok(d) = st.dev(&mac)
                && d.connect_cancels != cancels
            {
                return Err(BluezError::Failed("Operation cancelled".into()));
            }
        }
        // Wait for a link loss being announced to finish, so Connected=false never follows
        // this Connected=true.
        let link = link_lock(&self.sh, &mac)
            .ok_or_else(|| BluezError::DoesNotExist("Does Not Exist".into()))?;
        let _guard = link.lock().await;
        let (epoch, resolve_delay) = {
            let mut st = self.sh.lock();
            if st.generation != generation {
                return Err(BluezError::Failed(
                    "Software caused connection abort".into(),
                ));
            }
            let d = st.dev(&mac)?;
            d.connecting = false;
            if refuse {
                st.push(EventKind::ConnectRefused { mac: mac.clone() });
                drop(st);
                self.sh.cv.notify_all();
                return Err(BluezError::Failed("le-connection-abort-by-local".into()));
            }
            d.connected = true;
            d.link_epoch += 1;
            let out = (d.link_epoch, d.cfg.resolve_delay);
            st.push(EventKind::Connect { mac: mac.clone() });
            out
        };
        self.sh.cv.notify_all();
        if let Some(conn) = self.sh.conn_of(generation) {
            emit_changed(
                &conn,
                &device_path(&mac),
                DEVICE1,
                vec![("Connected", Value::from(true))],
            )
            .await;
        }
        tokio::spawn(resolve_services(
            self.sh.clone(),
            mac,
            generation,
            epoch,
            resolve_delay,
        ));
        Ok(())
    }

    /// As BlueZ: the caller's agent (if registered) is asked for what the pairing method needs.
    /// Pairing firmware with a keyboard agent: passkey entry (`RequestPasskey`), failing with
    /// AuthenticationFailed on a wrong passkey. No agent, or one without a keyboard, or any
    /// other device: "Just Works", a bond without MITM protection.
    async fn pair(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), BluezError> {
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        let mac = self.mac.clone();
        let fail = |error: BluezError| {
            self.sh.push(EventKind::PairFailed {
                mac: mac.clone(),
                error: format!("{error:?}"),
            });
            error
        };
        let (generation, want, agent) = {
            let mut st = self.sh.lock();
            st.push(EventKind::PairCalled { mac: mac.clone() });
            let agent = st.agents.get(&sender).cloned();
            let generation = st.generation;
            let d = st.dev(&mac)?;
            if d.paired {
                drop(st);
                return Err(fail(BluezError::AlreadyExists("Already Exists".into())));
            }
            let want = match &d.cfg.kind {
                DeviceKind::Jbd {
                    auth: JbdAuth::Pairing { passkey },
                    ..
                } => Some(*passkey),
                _ => None,
            };
            (generation, want, agent)
        };
        self.sh.cv.notify_all();
        let keyboard = |cap: &str| matches!(cap, "KeyboardOnly" | "KeyboardDisplay" | "");
        let authenticated = match (want, agent) {
            (Some(passkey), Some((path, cap))) if keyboard(&cap) => {
                let conn = self
                    .sh
                    .conn_of(generation)
                    .ok_or_else(|| BluezError::Failed("Not ready".into()))?;
                let asked = conn
                    .call_method(
                        Some(sender.as_str()),
                        path.as_str(),
                        Some("org.bluez.Agent1"),
                        "RequestPasskey",
                        &(owned_path(&device_path(&mac)),),
                    )
                    .await
                    .and_then(|m| m.body().deserialize::<u32>());
                match asked {
                    Ok(given) => {
                        self.sh.push(EventKind::PasskeyGiven {
                            mac: mac.clone(),
                            passkey: given,
                        });
                        if given != passkey {
                            return Err(fail(BluezError::AuthenticationFailed(
                                "Authentication Failed".into(),
                            )));
                        }
                        true
                    }
                    Err(_) => {
                        return Err(fail(BluezError::AuthenticationCanceled(
                            "Authentication Canceled".into(),
                        )));
                    }
                }
            }
            _ => false,
        };
        {
            let mut st = self.sh.lock();
            let d = st.dev(&mac)?;
            d.paired = true;
            d.bond_authenticated = authenticated;
            st.push(EventKind::Paired {
                mac: mac.clone(),
                authenticated,
            });
        }
        self.sh.cv.notify_all();
        if let Some(conn) = self.sh.conn_of(generation) {
            emit_changed(
                &conn,
                &device_path(&mac),
                DEVICE1,
                vec![("Paired", Value::from(true)), ("Bonded", Value::from(true))],
            )
            .await;
        }
        Ok(())
    }

    async fn cancel_pairing(&self) -> Result<(), BluezError> {
        Ok(())
    }

    async fn disconnect(&self) -> Result<(), BluezError> {
        self.sh.push(EventKind::Disconnect {
            mac: self.mac.clone(),
        });
        let delay = self
            .get(|d| d.cfg.faults.disconnect_delay)
            .unwrap_or_default();
        tokio::time::sleep(delay).await;
        let cancelled = {
            let mut st = self.sh.lock();
            let d = st.devices.get_mut(&self.mac).filter(|d| d.connecting);
            let cancel = d.map(|d| {
                d.connecting = false;
                d.connect_cancels += 1;
                d.cancel.clone()
            });
            if cancel.is_some() {
                st.push(EventKind::ConnectCancelled {
                    mac: self.mac.clone(),
                });
            }
            cancel
        };
        if let Some(cancel) = cancelled {
            cancel.notify_waiters();
            self.sh.cv.notify_all();
        }
        // Done in a task of its own: it removes GATT objects.
        let task = tokio::spawn(disconnect_device(self.sh.clone(), self.mac.clone(), false));
        let _ = task.await;
        Ok(())
    }

    #[zbus(property)]
    fn address(&self) -> String {
        self.mac.clone()
    }

    #[zbus(property)]
    fn address_type(&self) -> String {
        self.get(|d| d.cfg.address_type.clone()).unwrap_or_default()
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.get(|d| d.cfg.name.clone()).unwrap_or_default()
    }

    #[zbus(property)]
    fn alias(&self) -> String {
        self.get(|d| d.cfg.name.clone()).unwrap_or_default()
    }

    #[zbus(property, name = "RSSI")]
    fn rssi(&self) -> i16 {
        self.get(|d| d.cfg.rssi - d.rssi_tick).unwrap_or(-127)
    }

    /// The last advertisement's manufacturer data (a Victron device once it advertised).
    #[zbus(property)]
    fn manufacturer_data(&self) -> HashMap<u16, OwnedValue> {
        self.get(|d| d.manufacturer_data.clone())
            .flatten()
            .map(|bytes| {
                HashMap::from([(
                    VICTRON_COMPANY,
                    Value::from(bytes).try_to_owned().expect("bytes own"),
                )])
            })
            .unwrap_or_default()
    }

    #[zbus(property, name = "UUIDs")]
    fn uuids(&self) -> Vec<String> {
        self.get(|d| d.cfg.advertised_uuids.clone())
            .unwrap_or_default()
    }

    #[zbus(property)]
    fn paired(&self) -> bool {
        self.get(|d| d.paired).unwrap_or(false)
    }

    #[zbus(property)]
    fn bonded(&self) -> bool {
        self.get(|d| d.paired).unwrap_or(false)
    }

    #[zbus(property)]
    fn connected(&self) -> bool {
        self.get(|d| d.connected).unwrap_or(false)
    }

    #[zbus(property)]
    fn services_resolved(&self) -> bool {
        self.get(|d| d.services_resolved).unwrap_or(false)
    }

    #[zbus(property)]
    fn trusted(&self) -> bool {
        false
    }

    #[zbus(property)]
    fn blocked(&self) -> bool {
        false
    }

    #[zbus(property)]
    fn legacy_pairing(&self) -> bool {
        false
    }

    #[zbus(property)]
    fn adapter(&self) -> OwnedObjectPath {
        owned_path(ADAPTER_PATH)
    }
}

struct GattService1 {
    uuid: String,
    device: OwnedObjectPath,
}

#[interface(name = "org.bluez.GattService1", introspection_docs = false)]
impl GattService1 {
    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }

    #[zbus(property)]
    fn primary(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn device(&self) -> OwnedObjectPath {
        self.device.clone()
    }
}

struct GattCharacteristic1 {
    sh: Sh,
    mac: String,
    uuid: String,
    service: OwnedObjectPath,
    flags: Vec<String>,
    role: CharRole,
    /// Its object path's last part.
    suffix: &'static str,
}

impl GattCharacteristic1 {
    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// Connected, and the generation/epoch of that link.
    fn link(&self) -> Result<(u64, u64), BluezError> {
        let mut st = self.sh.lock();
        let generation = st.generation;
        let d = st.dev(&self.mac)?;
        if !d.connected {
            return Err(BluezError::Failed("Not connected".into()));
        }
        Ok((generation, d.link_epoch))
    }
}

fn option_str(options: &HashMap<String, OwnedValue>, key: &str) -> String {
    options
        .get(key)
        .and_then(|v| match &**v {
            Value::Str(s) => Some(s.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

fn option_u16(options: &HashMap<String, OwnedValue>, key: &str) -> usize {
    options
        .get(key)
        .and_then(|v| match &**v {
            Value::U16(n) => Some(usize::from(*n)),
            Value::U32(n) => Some(*n as usize),
            Value::U64(n) => Some(*n as usize),
            _ => None,
        })
        .unwrap_or(0)
}

#[interface(name = "org.bluez.GattCharacteristic1", introspection_docs = false)]
impl GattCharacteristic1 {
    async fn read_value(
        &self,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<u8>, BluezError> {
        if !self.has_flag("read") {
            return Err(BluezError::NotPermitted("Read not permitted".into()));
        }
        let (_generation, epoch) = self.link()?;
        let mac = self.mac.clone();
        let (faults, drop_now) = {
            let mut st = self.sh.lock();
            st.push(EventKind::Read { mac: mac.clone() });
            let d = st.dev(&mac)?;
            let mut drop_now = false;
            if self.role == CharRole::Record && !d.cfg.faults.silent {
                d.polls += 1;
                if let Some(n) = d.cfg.faults.drop_link_every_polls
                    && n > 0
                    && d.polls % u64::from(n) == 0
                {
                    drop_now = true;
                }
                if d.cfg.faults.drop_link_after_chunks.take().is_some() {
                    drop_now = true;
                }
            }
            (d.cfg.faults.clone(), drop_now)
        };
        self.sh.cv.notify_all();
        if self.role == CharRole::Record {
            if faults.silent {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return Err(BluezError::Failed("Operation timed out".into()));
            }
            if drop_now {
                if let Some(link) = link_lock(&self.sh, &mac) {
                    let guard = link.lock_owned().await;
                    let down = mark_down(&mut self.sh.lock(), &mac, true);
                    let sh = self.sh.clone();
                    // Off the handler: it removes this very object.
                    tokio::spawn(async move {
                        if let Some(down) = down {
                            announce_down(&sh, &mac, down).await;
                        }
                        drop(guard);
                    });
                }
                return Err(BluezError::Failed("Not connected".into()));
            }
            if !faults.reply_delay.is_zero() {
                tokio::time::sleep(faults.reply_delay).await;
            }
        }
        let mut value = {
            let mut st = self.sh.lock();
            let d = st.dev(&mac)?;
            if !d.connected || d.link_epoch != epoch {
                return Err(BluezError::Failed("Not connected".into()));
            }
            if self.role == CharRole::Record && d.cfg.faults.corrupt_checksum_next > 0 {
                d.cfg.faults.corrupt_checksum_next -= 1;
                let mut v = d.char_values.get(&self.uuid).cloned().unwrap_or_default();
                if !v.is_empty() {
                    let i = v.len() / 2;
                    v[i] ^= 0x5A;
                }
                v
            } else {
                d.char_values.get(&self.uuid).cloned().unwrap_or_default()
            }
        };
        let offset = option_u16(&options, "offset");
        if offset > value.len() {
            return Err(BluezError::Failed("Invalid offset".into()));
        }
        value.drain(..offset);
        Ok(value)
    }

    async fn write_value(
        &self,
        value: Vec<u8>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(), BluezError> {
        let write_type = option_str(&options, "type");
        let mac = self.mac.clone();
        let reject = |error: BluezError| {
            let msg = format!("{error:?}");
            self.sh.push(EventKind::WriteRejected {
                mac: mac.clone(),
                bytes: value.clone(),
                write_type: write_type.clone(),
                error: msg,
            });
            error
        };
        // BlueZ: "request" needs "write", "command" needs "write-without-response"; no type
        // picks whichever the characteristic has.
        let ok = match write_type.as_str() {
            "request" => self.has_flag("write"),
            "command" => self.has_flag("write-without-response"),
            "reliable" => self.has_flag("reliable-write"),
            _ => self.has_flag("write") || self.has_flag("write-without-response"),
        };
        if !ok {
            return Err(reject(BluezError::NotSupported(
                "Operation is not supported".into(),
            )));
        }
        let (generation, epoch) = match self.link() {
            Ok(l) => l,
            Err(e) => return Err(reject(e)),
        };
        self.sh.push(EventKind::Write {
            mac: mac.clone(),
            bytes: value.clone(),
            write_type: write_type.clone(),
        });
        if self.role == CharRole::JbdWrite {
            jbd_write(&self.sh, mac, value, generation, epoch);
        } else if matches!(self.role, CharRole::JkBoth | CharRole::JkWrite) {
            jk_write(&self.sh, mac, value, generation, epoch);
        } else if let Some(d) = self.sh.lock().devices.get_mut(&mac) {
            d.char_values.insert(self.uuid.clone(), value);
        }
        Ok(())
    }

    async fn start_notify(&self) -> Result<(), BluezError> {
        if !self.has_flag("notify") && !self.has_flag("indicate") {
            return Err(BluezError::NotSupported("Notify not supported".into()));
        }
        let (generation, _) = self.link()?;
        let (was, delay) = {
            let mut st = self.sh.lock();
            let d = st.dev(&self.mac)?;
            let was = d.notifying;
            d.notifying = true;
            let delay = d.cfg.faults.start_notify_delay;
            st.push(EventKind::StartNotify {
                mac: self.mac.clone(),
                uuid: self.uuid.clone(),
            });
            (was, delay)
        };
        self.sh.cv.notify_all();
        tokio::time::sleep(delay).await;
        if !was && let Some(conn) = self.sh.conn_of(generation) {
            let path = self.path();
            emit_changed(
                &conn,
                &path,
                GATT_CHAR1,
                vec![("Notifying", Value::from(true))],
            )
            .await;
        }
        Ok(())
    }

    async fn stop_notify(&self) -> Result<(), BluezError> {
        let generation = {
            let mut st = self.sh.lock();
            let generation = st.generation;
            let d = st.dev(&self.mac)?;
            if !d.notifying
                || !matches!(
                    self.role,
                    CharRole::JbdNotify | CharRole::JkBoth | CharRole::JkNotify
                )
            {
                return Err(BluezError::Failed("No notify session started".into()));
            }
            d.notifying = false;
            st.push(EventKind::StopNotify {
                mac: self.mac.clone(),
                uuid: self.uuid.clone(),
            });
            generation
        };
        self.sh.cv.notify_all();
        if let Some(conn) = self.sh.conn_of(generation) {
            emit_changed(
                &conn,
                &self.path(),
                GATT_CHAR1,
                vec![("Notifying", Value::from(false))],
            )
            .await;
        }
        Ok(())
    }

    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }

    #[zbus(property)]
    fn service(&self) -> OwnedObjectPath {
        self.service.clone()
    }

    #[zbus(property)]
    fn value(&self) -> Vec<u8> {
        let st = self.sh.lock();
        st.devices
            .get(&self.mac)
            .and_then(|d| d.char_values.get(&self.uuid).cloned())
            .unwrap_or_default()
    }

    #[zbus(property)]
    fn flags(&self) -> Vec<String> {
        self.flags.clone()
    }

    #[zbus(property)]
    fn notifying(&self) -> bool {
        matches!(
            self.role,
            CharRole::JbdNotify | CharRole::JkBoth | CharRole::JkNotify
        ) && self
            .sh
            .lock()
            .devices
            .get(&self.mac)
            .is_some_and(|d| d.notifying)
    }

    #[zbus(property, name = "MTU")]
    fn mtu(&self) -> u16 {
        self.sh
            .lock()
            .devices
            .get(&self.mac)
            .map_or(23, |d| d.cfg.mtu)
    }
}

impl GattCharacteristic1 {
    fn path(&self) -> String {
        char_path(&self.mac, self.suffix)
    }
}

// ---------------------------------------------------------------------------------------------
// Handle

/// Synchronous handle to a running mock BlueZ. Dropping it shuts the mock down (its connection
/// closes, so `org.bluez` vanishes from the bus).
pub struct MockBluez {
    rt: Option<tokio::runtime::Runtime>,
    sh: Sh,
    address: String,
}

impl MockBluez {
    /// Serve `org.bluez` (adapter hci0, no devices yet) on the bus at `bus_address`.
    pub fn start(bus_address: &str) -> MockBluez {
        Self::start_with(bus_address, Vec::new())
    }

    /// Serve `org.bluez` with these devices (known ones exported before the name is taken).
    pub fn start_with(bus_address: &str, devices: Vec<MockDevice>) -> MockBluez {
        let mock = Self::start_with_nothing(bus_address);
        {
            let mut st = mock.sh.lock();
            for d in devices {
                st.devices.insert(d.mac.clone(), DevState::new(d));
            }
        }
        let sh = mock.sh.clone();
        let addr = mock.address.clone();
        if let Err(e) = mock.run(come_up(sh, addr)) {
            panic!("mock BlueZ failed to start on {bus_address}: {e}");
        }
        mock
    }

    /// The mock's runtime and state, not on the bus yet.
    fn start_with_nothing(bus_address: &str) -> MockBluez {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mock-bluez")
            .enable_all()
            .build()
            .expect("tokio runtime for the mock");
        let sh = Arc::new(Shared {
            st: Mutex::new(State {
                conn: None,
                generation: 0,
                powered: true,
                discovering: HashSet::new(),
                scan_uuids: Vec::new(),
                rfkill_blocked: false,
                start_discovery_delay: Duration::ZERO,
                devices: Default::default(),
                events: Vec::new(),
                agents: HashMap::new(),
            }),
            cv: Condvar::new(),
        });
        MockBluez {
            rt: Some(rt),
            sh,
            address: bus_address.to_string(),
        }
    }

    /// An `org.bluez` that takes every call and never answers (bluetoothd wedged, e.g. stuck
    /// on a firmware load at boot). Each call taken is a [`EventKind::CallIgnored`] event.
    pub fn start_wedged(bus_address: &str) -> MockBluez {
        let mock = Self::start_with_nothing(bus_address);
        let sh = mock.sh.clone();
        let addr = mock.address.clone();
        if let Err(e) = mock.run(come_up_wedged(sh, addr)) {
            panic!("wedged mock BlueZ failed to start on {bus_address}: {e}");
        }
        mock
    }

    /// Run `fut` on the mock's runtime and wait for its result.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.rt.as_ref().expect("runtime").spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("mock BlueZ runtime stopped")
    }

    pub fn bus_address(&self) -> &str {
        &self.address
    }

    /// Add a device. A known one is exported at once (InterfacesAdded); one made with
    /// `appears_on_scan()` shows up on the next StartDiscovery.
    pub fn add_device(&self, dev: MockDevice) {
        let mac = dev.mac.clone();
        let (export, generation) = {
            let mut st = self.sh.lock();
            let known = dev.known;
            st.devices.insert(mac.clone(), DevState::new(dev));
            (known, st.generation)
        };
        if export {
            let sh = self.sh.clone();
            self.run(async move {
                if let Some(conn) = sh.conn_of(generation) {
                    export_device(&conn, &sh, &mac).await;
                }
            });
        }
    }

    fn with_dev<T>(&self, mac: &str, f: impl FnOnce(&mut DevState) -> T) -> T {
        let mac = norm_mac(mac);
        let mut st = self.sh.lock();
        let d = st
            .devices
            .get_mut(&mac)
            .unwrap_or_else(|| panic!("mock has no device {mac}"));
        f(d)
    }

    pub fn set_faults(&self, mac: &str, faults: Faults) {
        self.with_dev(mac, |d| d.cfg.faults = faults);
    }

    pub fn update_faults(&self, mac: &str, f: impl FnOnce(&mut Faults)) {
        self.with_dev(mac, |d| f(&mut d.cfg.faults));
    }

    /// The device's current faults (counters as left by the replies so far).
    pub fn faults(&self, mac: &str) -> Faults {
        self.with_dev(mac, |d| d.cfg.faults.clone())
    }

    /// How long after Connect returns ServicesResolved turns true (default 50 ms).
    pub fn set_resolve_delay(&self, mac: &str, delay: Duration) {
        self.with_dev(mac, |d| d.cfg.resolve_delay = delay);
    }

    /// Set the full reply frame of a JBD register.
    pub fn set_reply(&self, mac: &str, reg: u8, frame: Vec<u8>) {
        self.with_dev(mac, |d| {
            if let DeviceKind::Jbd { replies, .. } = &mut d.cfg.kind {
                replies.insert(reg, frame);
            } else {
                panic!("{mac} is not a JBD device");
            }
        });
    }

    /// Remove a JBD register (it then gets the "unknown command" reply).
    pub fn remove_reply(&self, mac: &str, reg: u8) {
        self.with_dev(mac, |d| {
            if let DeviceKind::Jbd { replies, .. } = &mut d.cfg.kind {
                replies.remove(&reg);
            }
        });
    }

    /// Set the value a PowerMon read returns.
    pub fn set_record(&self, mac: &str, bytes: Vec<u8>) {
        self.with_dev(mac, |d| {
            let uuid = layout(&d.cfg).1[0].uuid.clone();
            if let DeviceKind::PowerMon { record, .. } = &mut d.cfg.kind {
                *record = bytes.clone();
            } else {
                panic!("{mac} is not a PowerMon device");
            }
            d.char_values.insert(uuid, bytes);
        });
    }

    /// Drop the link now, as a device going out of range would (LinkDropped event).
    /// A bond BlueZ already holds for this device (as `bluetoothctl pair` without a keyboard
    /// agent leaves: `authenticated` false, and pairing firmware keeps echoing).
    pub fn set_bond(&self, mac: &str, authenticated: bool) {
        let mut st = self.sh.lock();
        if let Some(d) = st.devices.get_mut(&norm_mac(mac)) {
            d.paired = true;
            d.bond_authenticated = authenticated;
        }
    }

    pub fn drop_link(&self, mac: &str) {
        let sh = self.sh.clone();
        let mac = norm_mac(mac);
        self.run(disconnect_device(sh, mac, true));
    }

    pub fn is_connected(&self, mac: &str) -> bool {
        self.with_dev(mac, |d| d.connected)
    }

    pub fn is_notifying(&self, mac: &str) -> bool {
        self.with_dev(mac, |d| d.notifying)
    }

    /// Whether a client has a discovery session.
    pub fn is_discovering(&self) -> bool {
        !self.sh.lock().discovering.is_empty()
    }

    /// rfkill blocks the adapter: it is off, powering it on fails, and so does a scan.
    pub fn set_rfkill_blocked(&self, blocked: bool) {
        let mut st = self.sh.lock();
        st.rfkill_blocked = blocked;
        st.powered = !blocked;
    }

    /// StartDiscovery answers only after `delay` (the session counts from the call): a slow
    /// controller, or a busy bluetoothd.
    pub fn set_start_discovery_delay(&self, delay: Duration) {
        self.sh.lock().start_discovery_delay = delay;
    }

    /// How many advertisements a Victron device has sent.
    pub fn adverts(&self, mac: &str) -> u64 {
        self.with_dev(mac, |d| d.adverts)
    }

    /// Waits until a Victron device has sent at least `n` advertisements.
    pub fn wait_adverts(&self, mac: &str, n: u64, timeout: Duration) -> bool {
        let mac = norm_mac(mac);
        self.wait_state(
            |st| st.devices.get(&mac).is_some_and(|d| d.adverts >= n),
            timeout,
        )
    }

    /// Changes what a Victron device advertises from its next advertisement on.
    pub fn set_victron_plaintext(&self, mac: &str, new: Vec<u8>) {
        self.with_dev(mac, |d| {
            if let DeviceKind::Victron { plaintext, .. } = &mut d.cfg.kind {
                *plaintext = new;
            }
        });
    }

    /// `org.bluez` goes away (name released, connection closed, all links lost), stays away
    /// for 300 ms, and comes back with the same devices, all disconnected.
    pub fn restart(&self) {
        self.restart_after(Duration::from_millis(300));
    }

    pub fn restart_after(&self, downtime: Duration) {
        self.stop();
        std::thread::sleep(downtime);
        self.resume();
    }

    /// The adapter disappears (a USB dongle unplugged): its object is removed
    /// (InterfacesRemoved), and with it every link. BlueZ itself stays.
    pub fn remove_adapter(&self) {
        let macs: Vec<String> = self.sh.lock().devices.keys().cloned().collect();
        for mac in macs {
            self.run(disconnect_device(self.sh.clone(), mac, true));
        }
        let sh = self.sh.clone();
        self.run(async move {
            let generation = sh.lock().generation;
            if let Some(conn) = sh.conn_of(generation) {
                let _ = conn
                    .object_server()
                    .remove::<Adapter1, _>(ADAPTER_PATH)
                    .await;
            }
            sh.push(EventKind::AdapterRemoved);
        });
    }

    /// `org.bluez` goes away until [`resume`](Self::resume).
    pub fn stop(&self) {
        let sh = self.sh.clone();
        self.run(go_away(sh));
    }

    /// `org.bluez` comes back (after [`stop`](Self::stop)).
    pub fn resume(&self) {
        let sh = self.sh.clone();
        let addr = self.address.clone();
        if self.sh.lock().conn.is_some() {
            return;
        }
        if let Err(e) = self.run(come_up(sh, addr)) {
            panic!("mock BlueZ failed to come back: {e}");
        }
    }

    pub fn events(&self) -> Vec<MockEvent> {
        self.sh.lock().events.clone()
    }

    pub fn clear_events(&self) {
        self.sh.lock().events.clear();
    }

    pub fn count(&self, pred: impl Fn(&MockEvent) -> bool) -> usize {
        self.sh.lock().events.iter().filter(|e| pred(e)).count()
    }

    /// Wait until some recorded event matches (also one recorded before the call).
    pub fn wait_for(&self, pred: impl Fn(&MockEvent) -> bool, timeout: Duration) -> bool {
        self.wait_for_count(pred, 1, timeout)
    }

    /// Wait until at least `n` recorded events match.
    pub fn wait_for_count(
        &self,
        pred: impl Fn(&MockEvent) -> bool,
        n: usize,
        timeout: Duration,
    ) -> bool {
        self.wait_state(
            |st| st.events.iter().filter(|e| pred(e)).count() >= n,
            timeout,
        )
    }

    /// Waits until the mock's state satisfies `done` (woken by every change it signals).
    fn wait_state(&self, done: impl Fn(&State) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.sh.lock();
        loop {
            if done(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .sh
                .cv
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for MockBluez {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
