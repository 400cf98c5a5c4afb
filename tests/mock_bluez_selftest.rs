//! Self-test of the mock BlueZ against the real client stack (btleplug -> bluez-async ->
//! libdbus), with no Bluetooth hardware.
//!
//! libdbus takes the system bus address from `DBUS_SYSTEM_BUS_ADDRESS`, which must not be set
//! with `set_var` in a multi-threaded test binary. So each parent test starts a private bus and
//! the mock, then runs the btleplug side in a child process: this same test binary, re-executed
//! with `MOCK_CHILD=<scenario>` and the variable set. That needs our own `main` (the target has
//! `harness = false` in Cargo.toml): it runs the named child scenario when `MOCK_CHILD` is set,
//! and otherwise every parent test, each on its own thread, failing the run if any fails.
//! `MOCK_CHILD_LOG=1` prints each child's stderr even when it passes.

mod support;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio::time::{sleep, timeout};

use support::{
    bus::PrivateBus,
    fixtures::{
        cobs_decode, cobs_encode, pack_4s, pack_16s, powermon_new_sample, powermon_old_sample,
    },
    mock_bluez::{
        EventKind, Faults, JBD_ALT_NOTIFY, JBD_ALT_WRITE, JBD_NOTIFY, JBD_SERVICE, JBD_WRITE,
        MockBluez, MockDevice, MockEvent, POWERMON_NEW_CHAR, POWERMON_OLD_CHAR,
        POWERMON_OLD_SERVICE, PowerMonFirmware, jbd_checksum, jbd_frame, jbd_read_request,
        parse_jbd_read_request,
    },
};

const CHILD_ENV: &str = "MOCK_CHILD";
const JBD4: &str = "AA:BB:CC:DD:EE:01";
const JBD16: &str = "AA:BB:CC:DD:EE:02";
const PM_OLD: &str = "AA:BB:CC:DD:EE:03";
const PM_NEW: &str = "AA:BB:CC:DD:EE:04";
const SILENT: &str = "AA:BB:CC:DD:EE:05";
const SLOW: &str = "AA:BB:CC:DD:EE:06";
const CHUNKS: [usize; 4] = [7, 13, 1, 20];
const GARBAGE: [u8; 3] = [0x00, 0xAA, 0x55];

// ---------------------------------------------------------------------------------------------
// Parent side

struct ChildRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Run the child test `name` with the system bus pointed at `bus`; kill it after `limit`.
fn spawn_child(name: &str, bus: &PrivateBus, limit: Duration) -> ChildHandle {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::fs::File::create(dir.path().join("out")).unwrap();
    let err = std::fs::File::create(dir.path().join("err")).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .env(CHILD_ENV, name)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn child test");
    ChildHandle {
        name: name.to_string(),
        child,
        dir,
        deadline: Instant::now() + limit,
    }
}

struct ChildHandle {
    name: String,
    child: std::process::Child,
    dir: tempfile::TempDir,
    deadline: Instant,
}

impl ChildHandle {
    fn wait(mut self) -> ChildRun {
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break Some(st);
            }
            if Instant::now() > self.deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        let (stdout, stderr) = (read("out"), read("err"));
        // The child prints this after its scenario returned; make sure it ran at all.
        let ran = stdout.contains(&format!("child {} ok", self.name));
        ChildRun {
            ok: status.is_some_and(|s| s.success()) && ran,
            stdout: if status.is_none() {
                format!("[child {} killed after timeout]\n{stdout}", self.name)
            } else {
                stdout
            },
            stderr,
        }
    }

    fn wait_ok(self) {
        let name = self.name.clone();
        let run = self.wait();
        if std::env::var_os("MOCK_CHILD_LOG").is_some() {
            eprintln!("--- child {name} stderr ---\n{}", run.stderr);
        }
        assert!(
            run.ok,
            "child {name} failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
            run.stdout, run.stderr
        );
    }
}

fn run_child(name: &str, bus: &PrivateBus) {
    spawn_child(name, bus, Duration::from_secs(25)).wait_ok();
}

fn is<F: Fn(&EventKind) -> bool>(f: F) -> impl Fn(&MockEvent) -> bool {
    move |e| f(&e.kind)
}

fn jbd4() -> MockDevice {
    MockDevice::jbd(JBD4, "SP04S034-L4S-100A").with_replies(pack_4s().replies())
}

fn jbd16_fff0_write() -> MockDevice {
    MockDevice::jbd_fff0(JBD16, "xiaoxiang BMS")
        .with_write_flags(&["write"])
        .with_replies(pack_16s().replies())
}

fn frames_and_fixtures() {
    // Known request checksums (protocols.md).
    assert_eq!(
        jbd_read_request(0x03),
        [0xDD, 0xA5, 0x03, 0x00, 0xFF, 0xFD, 0x77]
    );
    assert_eq!(jbd_read_request(0x04)[4..6], [0xFF, 0xFC]);
    assert_eq!(jbd_read_request(0x05)[4..6], [0xFF, 0xFB]);
    assert_eq!(parse_jbd_read_request(&jbd_read_request(0x03)), Some(0x03));
    assert_eq!(
        parse_jbd_read_request(&[0xDD, 0xA5, 0x03, 0x00, 0xFF, 0xFC, 0x77]),
        None
    );
    assert_eq!(
        parse_jbd_read_request(&[0xDD, 0x5A, 0xE1, 0x02, 0x00, 0x01, 0x77]),
        None
    );
    // Error reply of clones without 0x05.
    assert_eq!(
        jbd_frame(0x05, 0x80, &[]),
        [0xDD, 0x05, 0x80, 0x00, 0xFF, 0x80, 0x77]
    );
    assert_eq!(jbd_checksum(&[0x80, 0x00]), 0xFF80);

    let p4 = pack_4s().replies();
    assert_eq!(p4[&0x03].len(), 7 + 23 + 4);
    assert_eq!(p4[&0x04].len(), 7 + 8);
    assert_eq!(&p4[&0x03][4..6], &1328u16.to_be_bytes());
    let p16 = pack_16s().replies();
    let basic = &p16[&0x03];
    assert_eq!(basic.len(), 7 + 23 + 6);
    // The 16S frames carry 0xDD / 0x77 inside their data on purpose.
    assert_eq!(basic[basic.len() - 4], 0x77, "last data byte is 0x77");
    assert!(p16[&0x04][4..p16[&0x04].len() - 3].contains(&0xDD));

    let old = powermon_old_sample().encode();
    assert_eq!(old.len(), 52);
    assert_eq!(old[3], 170);
    assert_eq!(f32::from_le_bytes(old[4..8].try_into().unwrap()), 13.31);
    let new = powermon_new_sample();
    let enc = new.encode();
    assert_eq!(enc.len(), 54);
    assert_eq!((enc[0], enc[53]), (0, 0));
    assert!(!enc[1..53].contains(&0));
    assert_eq!(cobs_decode(&enc[1..53]).unwrap(), new.data());
    assert_eq!(
        cobs_encode(&[0x11, 0x00, 0x00, 0x22]),
        [0x02, 0x11, 0x01, 0x02, 0x22]
    );
}

fn scan_finds_device_not_yet_known() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![
            jbd4().appears_on_scan(),
            MockDevice::powermon(
                PM_OLD,
                "PowerMon",
                PowerMonFirmware::Old,
                powermon_old_sample().encode(),
            ),
        ],
    );
    run_child("child_scan", &bus);
    assert_eq!(mock.count(is(|k| *k == EventKind::StartDiscovery)), 2);
    assert_eq!(mock.count(is(|k| *k == EventKind::StopDiscovery)), 2);
    assert!(!mock.is_discovering());
}

fn jbd_request_reply_and_chunking() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(&bus.address(), vec![jbd4(), jbd16_fff0_write()]);
    mock.set_faults(
        JBD16,
        Faults {
            chunk_sizes: CHUNKS.to_vec(),
            ..Faults::default()
        },
    );
    run_child("child_jbd", &bus);
    let writes = |mac: &'static str| {
        mock.events()
            .into_iter()
            .filter_map(move |e| match e.kind {
                EventKind::Write {
                    mac: m,
                    write_type,
                    bytes,
                } if m == mac => Some((write_type, bytes)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let w4 = writes(JBD4);
    assert_eq!(w4.len(), 6, "{w4:?}");
    assert!(w4.iter().all(|(t, _)| t == "command"), "{w4:?}");
    assert_eq!(w4[0].1, jbd_read_request(0x03));
    let w16 = writes(JBD16);
    assert_eq!(w16.len(), 2, "{w16:?}");
    assert!(w16.iter().all(|(t, _)| t == "request"), "{w16:?}");
    // The write-without-response attempt on the "write"-only characteristic was refused.
    assert_eq!(
        mock.count(is(
            |k| matches!(k, EventKind::WriteRejected { mac, .. } if mac == JBD16)
        )),
        1
    );
    // Notifications as the mock sent them, for the 16S device: the CHUNKS pattern.
    let sizes: Vec<usize> = mock
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Notify { mac, bytes } if mac == JBD16 => Some(bytes.len()),
            _ => None,
        })
        .collect();
    let f3 = pack_16s().replies()[&0x03].len();
    let f4 = pack_16s().replies()[&0x04].len();
    let mut expect = split_sizes(f3, &CHUNKS);
    expect.extend(split_sizes(f4, &CHUNKS));
    assert_eq!(sizes, expect);
}

fn jbd_faults_seen_by_btleplug() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![
            jbd4().with_faults(Faults {
                garbage_before: GARBAGE.to_vec(),
                stale_next: 1,
                corrupt_checksum_next: 1,
                ..Faults::default()
            }),
            MockDevice::jbd(SILENT, "silent").with_faults(Faults {
                silent: true,
                ..Faults::default()
            }),
            MockDevice::jbd(SLOW, "slow")
                .with_replies(pack_4s().replies())
                .with_faults(Faults {
                    reply_delay: Duration::from_millis(300),
                    chunk_gap: Duration::from_millis(10),
                    drop_link_every_polls: Some(2),
                    ..Faults::default()
                }),
        ],
    );
    run_child("child_faults", &bus);
    let f = mock.faults(JBD4);
    assert_eq!((f.stale_next, f.corrupt_checksum_next), (0, 0));
    assert_eq!(
        mock.count(|e| e.is_for(SILENT) && matches!(e.kind, EventKind::Notify { .. })),
        0
    );
    assert_eq!(
        mock.count(|e| e.is_for(SILENT) && matches!(e.kind, EventKind::Write { .. })),
        1
    );
    assert_eq!(
        mock.count(|e| e.is_for(SLOW) && matches!(e.kind, EventKind::LinkDropped { .. })),
        1
    );
}

fn powermon_reads_both_layouts() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![
            MockDevice::powermon(
                PM_OLD,
                "PowerMon",
                PowerMonFirmware::Old,
                powermon_old_sample().encode(),
            ),
            MockDevice::powermon(
                PM_NEW,
                "PowerMon-5S",
                PowerMonFirmware::New,
                powermon_new_sample().encode(),
            ),
        ],
    );
    run_child("child_powermon", &bus);
    assert_eq!(
        mock.count(is(
            |k| matches!(k, EventKind::Read { mac } if mac == PM_OLD)
        )),
        2
    );
    assert_eq!(
        mock.count(is(
            |k| matches!(k, EventKind::Read { mac } if mac == PM_NEW)
        )),
        1
    );
}

fn refused_connects_then_success() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![jbd4().with_faults(Faults {
            refuse_connects: 2,
            connect_delay: Duration::from_millis(100),
            ..Faults::default()
        })],
    );
    run_child("child_refuse", &bus);
    assert_eq!(
        mock.count(is(|k| matches!(k, EventKind::ConnectRefused { .. }))),
        2
    );
    assert_eq!(
        mock.count(is(|k| matches!(k, EventKind::Connect { .. }))),
        1
    );
    assert_eq!(mock.faults(JBD4).refuse_connects, 0);
}

fn dropped_link_reports_disconnect() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![jbd4().with_faults(Faults {
            drop_link_after_chunks: Some(1),
            ..Faults::default()
        })],
    );
    let child = spawn_child("child_drop", &bus, Duration::from_secs(25));
    // Second phase: once the child has subscribed again after the first (fault) drop, drop
    // the link from here, as a device going out of range.
    let again = mock.wait_for_count(
        is(|k| matches!(k, EventKind::StartNotify { .. })),
        2,
        Duration::from_secs(15),
    );
    assert!(again, "child did not resubscribe: {:?}", mock.events());
    std::thread::sleep(Duration::from_millis(100));
    mock.drop_link(JBD4);
    child.wait_ok();
    assert_eq!(
        mock.count(is(|k| matches!(k, EventKind::LinkDropped { .. }))),
        2
    );
    assert_eq!(mock.faults(JBD4).drop_link_after_chunks, None);
}

fn restart_makes_adapter_vanish_and_return() {
    restart_scenario(&PrivateBus::start());
}

/// The same on the reference bus, which answers calls to a vanished name with ServiceUnknown
/// (the benchmark runs the mock on it). Ignored unless asked for (`-- --ignored`, as .ci/run
/// does): it needs Debian's dbus-daemon.
fn restart_on_dbus_daemon() {
    let bus = PrivateBus::start_dbus_daemon()
        .expect("dbus-daemon not available (Debian package dbus-daemon)");
    assert!(bus.is_dbus_daemon());
    restart_scenario(&bus);
}

fn restart_scenario(bus: &PrivateBus) {
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![MockDevice::powermon(
            PM_OLD,
            "PowerMon",
            PowerMonFirmware::Old,
            powermon_old_sample().encode(),
        )],
    );
    let child = spawn_child("child_restart", bus, Duration::from_secs(25));
    assert!(
        mock.wait_for(
            is(|k| matches!(k, EventKind::Read { .. })),
            Duration::from_secs(15)
        ),
        "child never read"
    );
    // Let the read's reply go out before the name vanishes (a call in flight when BlueZ goes
    // away gets no reply, and would wait for libdbus's timeout).
    std::thread::sleep(Duration::from_millis(300));
    mock.restart_after(Duration::from_millis(1000));
    child.wait_ok();
    assert!(!mock.events().is_empty());
    assert_eq!(mock.count(is(|k| *k == EventKind::BluezStopped)), 1);
    assert_eq!(mock.count(is(|k| *k == EventKind::BluezStarted)), 2);
    assert_eq!(mock.count(is(|k| matches!(k, EventKind::Read { .. }))), 2);
}

fn split_sizes(len: usize, pattern: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut k) = (len, 0);
    while left > 0 {
        let n = pattern[k % pattern.len()].min(left);
        out.push(n);
        left -= n;
        k += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Child side: btleplug against the mock. Each returns at once unless started by a parent.

mod child {
    use std::{collections::BTreeMap, time::Duration};

    use btleplug::{
        api::{
            BDAddr, Central, CentralEvent, Characteristic, Manager as _, Peripheral as _,
            ValueNotification, WriteType,
        },
        platform::{Adapter, Manager, Peripheral},
    };
    use futures::{Stream, StreamExt};
    use tokio::time::timeout;
    use uuid::Uuid;

    pub const T: Duration = Duration::from_secs(10);

    pub fn run<F: std::future::Future<Output = ()>>(f: F) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            match timeout(Duration::from_secs(20), f).await {
                Ok(()) => {}
                Err(_) => panic!("child scenario timed out"),
            }
        });
    }

    pub async fn adapter() -> (Manager, Adapter) {
        let manager = Manager::new().await.expect("btleplug manager");
        let adapters = manager.adapters().await.expect("adapters");
        assert_eq!(adapters.len(), 1, "one adapter");
        let adapter = adapters.into_iter().next().unwrap();
        (manager, adapter)
    }

    pub fn addr(mac: &str) -> BDAddr {
        mac.parse().expect("mac")
    }

    pub async fn find(adapter: &Adapter, mac: &str) -> Option<Peripheral> {
        let want = addr(mac);
        adapter
            .peripherals()
            .await
            .expect("peripherals")
            .into_iter()
            .find(|p| p.address() == want)
    }

    pub async fn connect(p: &Peripheral) {
        timeout(T, p.connect())
            .await
            .expect("connect timeout")
            .expect("connect");
        timeout(T, p.discover_services())
            .await
            .expect("discover timeout")
            .expect("discover");
    }

    pub fn char_of(p: &Peripheral, uuid: &str) -> Characteristic {
        let u = Uuid::parse_str(uuid).unwrap();
        p.characteristics()
            .into_iter()
            .find(|c| c.uuid == u)
            .unwrap_or_else(|| panic!("no characteristic {uuid} in {:?}", p.characteristics()))
    }

    /// Collect notifications of `uuid` until a JBD frame (7 + len bytes) is complete; returns
    /// the frame and the sizes of the notifications it came in.
    pub async fn read_frame<S>(stream: &mut S, uuid: &str) -> (Vec<u8>, Vec<usize>)
    where
        S: Stream<Item = ValueNotification> + Unpin,
    {
        let u = Uuid::parse_str(uuid).unwrap();
        let mut buf = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let n = timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("notification timeout")
                .expect("notification stream ended");
            if n.uuid != u {
                continue;
            }
            sizes.push(n.value.len());
            buf.extend_from_slice(&n.value);
            if buf.len() >= 4 && buf.len() >= 7 + buf[3] as usize {
                return (buf, sizes);
            }
        }
    }

    pub async fn request(
        p: &Peripheral,
        write: &Characteristic,
        wt: WriteType,
        reg: u8,
        stream: &mut (impl Stream<Item = ValueNotification> + Unpin),
        notify_uuid: &str,
    ) -> (Vec<u8>, Vec<usize>) {
        let req = super::jbd_read_request(reg);
        timeout(T, p.write(write, &req, wt))
            .await
            .expect("write timeout")
            .expect("write");
        read_frame(stream, notify_uuid).await
    }

    pub async fn wait_event(
        events: &mut (impl Stream<Item = CentralEvent> + Unpin),
        what: &str,
        pred: impl Fn(&CentralEvent) -> bool,
    ) -> CentralEvent {
        loop {
            let e = timeout(T, events.next())
                .await
                .unwrap_or_else(|_| panic!("timeout waiting for {what}"))
                .expect("event stream ended");
            if pred(&e) {
                return e;
            }
        }
    }

    pub fn frames_4s() -> BTreeMap<u8, Vec<u8>> {
        super::pack_4s().replies()
    }

    pub fn frames_16s() -> BTreeMap<u8, Vec<u8>> {
        super::pack_16s().replies()
    }

    pub use btleplug::api::CentralEvent as Ev;
}

fn child_scan() {
    use btleplug::api::{Central, Peripheral as _, ScanFilter};
    use child::*;
    child::run(async {
        let (_m, adapter) = adapter().await;
        // Cached device visible without a scan; the unknown one is not.
        assert!(find(&adapter, PM_OLD).await.is_some());
        assert!(find(&adapter, JBD4).await.is_none());
        // A scan filtered on another service does not bring the JBD in.
        let pm_only = ScanFilter {
            services: vec![uuid::Uuid::parse_str(POWERMON_OLD_SERVICE).unwrap()],
        };
        adapter
            .start_scan(pm_only)
            .await
            .expect("filtered start_scan");
        sleep(Duration::from_millis(300)).await;
        adapter.stop_scan().await.expect("stop_scan");
        assert!(find(&adapter, JBD4).await.is_none(), "filtered out");

        let mut events = adapter.events().await.expect("events");
        adapter
            .start_scan(ScanFilter::default())
            .await
            .expect("start_scan");
        // BlueZ refuses a second StartDiscovery from the same client (btleplug #255).
        let again = adapter.start_scan(ScanFilter::default()).await;
        let again = format!("{again:?}");
        assert!(again.contains("InProgress"), "second start_scan: {again}");
        let want = addr(JBD4);
        let mut found = None;
        while found.is_none() {
            if let Ev::DeviceDiscovered(id) = wait_event(&mut events, "discovery", |e| {
                matches!(e, Ev::DeviceDiscovered(_))
            })
            .await
            {
                let p = adapter.peripheral(&id).await.expect("peripheral");
                if p.address() == want {
                    found = Some(p);
                }
            }
        }
        let p = found.unwrap();
        let props = p.properties().await.unwrap().unwrap();
        assert_eq!(props.local_name.as_deref(), Some("SP04S034-L4S-100A"));
        assert!(
            props
                .services
                .contains(&uuid::Uuid::parse_str(JBD_SERVICE).unwrap())
        );
        // The scan "advertises": RSSI updates arrive.
        wait_event(&mut events, "rssi", |e| matches!(e, Ev::RssiUpdate { .. })).await;
        adapter.stop_scan().await.expect("stop_scan");
        assert!(find(&adapter, JBD4).await.is_some());
        drop(events);
    });
}

fn child_jbd() {
    use btleplug::api::{Peripheral as _, WriteType};
    use child::*;
    child::run(async {
        let (_m, adapter) = adapter().await;

        // 4S on ff00, write-without-response, default 20-byte chunks.
        let p = find(&adapter, JBD4).await.expect("jbd4 known");
        connect(&p).await;
        let notify = char_of(&p, JBD_NOTIFY);
        let write = char_of(&p, JBD_WRITE);
        assert!(
            write
                .properties
                .contains(btleplug::api::CharPropFlags::WRITE_WITHOUT_RESPONSE)
        );
        let mut stream = p.notifications().await.expect("notifications");
        p.subscribe(&notify).await.expect("subscribe");
        let expect = frames_4s();
        for reg in [0x03u8, 0x04, 0x05] {
            let (frame, sizes) = request(
                &p,
                &write,
                WriteType::WithoutResponse,
                reg,
                &mut stream,
                JBD_NOTIFY,
            )
            .await;
            assert_eq!(frame, expect[&reg], "register {reg:#04x}");
            assert!(sizes.iter().all(|&s| s <= 20), "{sizes:?}");
            assert_eq!(sizes[0], frame.len().min(20));
        }
        // Unknown register: error reply.
        let (frame, _) = request(
            &p,
            &write,
            WriteType::WithoutResponse,
            0x42,
            &mut stream,
            JBD_NOTIFY,
        )
        .await;
        assert_eq!(frame, jbd_frame(0x42, 0x80, &[]));
        // A write that is not a read request is ignored; the next request still works.
        p.write(&write, &[0x01, 0x02, 0x03], WriteType::WithoutResponse)
            .await
            .expect("raw write");
        let (frame, _) = request(
            &p,
            &write,
            WriteType::WithoutResponse,
            0x03,
            &mut stream,
            JBD_NOTIFY,
        )
        .await;
        assert_eq!(frame, expect[&0x03]);
        p.unsubscribe(&notify).await.expect("unsubscribe");
        p.disconnect().await.expect("disconnect");

        // 16S on fff0, "write" only, chunks [7, 13, 1, 20].
        let p = find(&adapter, JBD16).await.expect("jbd16 known");
        connect(&p).await;
        let notify = char_of(&p, JBD_ALT_NOTIFY);
        let write = char_of(&p, JBD_ALT_WRITE);
        let mut stream = p.notifications().await.expect("notifications");
        p.subscribe(&notify).await.expect("subscribe");
        let refused = p
            .write(&write, &jbd_read_request(0x03), WriteType::WithoutResponse)
            .await;
        let refused = format!("{refused:?}");
        assert!(
            refused.contains("NotSupported"),
            "write-without-response on write-only: {refused}"
        );
        let expect = frames_16s();
        for reg in [0x03u8, 0x04] {
            let (frame, sizes) = request(
                &p,
                &write,
                WriteType::WithResponse,
                reg,
                &mut stream,
                JBD_ALT_NOTIFY,
            )
            .await;
            assert_eq!(frame, expect[&reg], "register {reg:#04x}");
            assert_eq!(sizes, split_sizes(frame.len(), &CHUNKS));
        }
        p.disconnect().await.expect("disconnect");
        assert!(!p.is_connected().await.unwrap());
        drop(stream);
    });
}

fn child_faults() {
    use btleplug::api::{Central, Peripheral as _, WriteType};
    use child::*;
    child::run(async {
        let (_m, adapter) = adapter().await;
        let expect = frames_4s();

        // Garbage notification, then a stale 0x04 reply, then 0x03 with a bad checksum; the
        // next reply has garbage only.
        let p = find(&adapter, JBD4).await.unwrap();
        connect(&p).await;
        let (notify, write) = (char_of(&p, JBD_NOTIFY), char_of(&p, JBD_WRITE));
        let mut stream = p.notifications().await.unwrap();
        p.subscribe(&notify).await.unwrap();
        let wt = WriteType::WithoutResponse;
        p.write(&write, &jbd_read_request(0x03), wt).await.unwrap();
        let first = timeout(T, stream.next()).await.unwrap().unwrap();
        assert_eq!(first.value, GARBAGE);
        let (stale, _) = read_frame(&mut stream, JBD_NOTIFY).await;
        assert_eq!(stale, expect[&0x04]);
        let (bad, _) = read_frame(&mut stream, JBD_NOTIFY).await;
        assert_eq!(bad.len(), expect[&0x03].len());
        assert_ne!(bad, expect[&0x03]);
        let n = bad.len();
        assert_eq!(
            bad[..n - 2],
            expect[&0x03][..n - 2],
            "only the checksum differs"
        );
        assert_eq!(bad[n - 1], 0x77);
        p.write(&write, &jbd_read_request(0x04), wt).await.unwrap();
        let first = timeout(T, stream.next()).await.unwrap().unwrap();
        assert_eq!(first.value, GARBAGE);
        let (good, _) = read_frame(&mut stream, JBD_NOTIFY).await;
        assert_eq!(good, expect[&0x04]);
        p.disconnect().await.unwrap();

        // A device that never answers.
        let p = find(&adapter, SILENT).await.unwrap();
        connect(&p).await;
        let (notify, write) = (char_of(&p, JBD_NOTIFY), char_of(&p, JBD_WRITE));
        let mut stream = p.notifications().await.unwrap();
        p.subscribe(&notify).await.unwrap();
        p.write(&write, &jbd_read_request(0x03), wt).await.unwrap();
        assert!(
            timeout(Duration::from_millis(500), stream.next())
                .await
                .is_err()
        );
        p.disconnect().await.unwrap();

        // Slow replies; every 2nd poll of 0x03 loses the link after the first chunk.
        let mut events = adapter.events().await.unwrap();
        let p = find(&adapter, SLOW).await.unwrap();
        let id = p.id();
        connect(&p).await;
        let (notify, write) = (char_of(&p, JBD_NOTIFY), char_of(&p, JBD_WRITE));
        let mut stream = p.notifications().await.unwrap();
        p.subscribe(&notify).await.unwrap();
        let t0 = std::time::Instant::now();
        let (frame, _) = request(&p, &write, wt, 0x03, &mut stream, JBD_NOTIFY).await;
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(frame, expect[&0x03]);
        p.write(&write, &jbd_read_request(0x03), wt).await.unwrap();
        let first = timeout(T, stream.next()).await.unwrap().unwrap();
        assert_eq!(first.value.len(), 20);
        wait_event(
            &mut events,
            "DeviceDisconnected",
            |e| matches!(e, Ev::DeviceDisconnected(d) if *d == id),
        )
        .await;
        assert!(
            timeout(Duration::from_millis(300), stream.next())
                .await
                .is_err(),
            "no more chunks after the link dropped"
        );
        drop(stream);
        drop(events);
    });
}

fn child_powermon() {
    use btleplug::api::{AddressType, Peripheral as _};
    use child::*;
    child::run(async {
        let (_m, adapter) = adapter().await;
        let p = find(&adapter, PM_OLD).await.expect("old powermon");
        let props = p.properties().await.unwrap().unwrap();
        assert_eq!(props.address_type, Some(AddressType::Random));
        connect(&p).await;
        let c = char_of(&p, POWERMON_OLD_CHAR);
        let v = timeout(T, p.read(&c)).await.unwrap().expect("read");
        assert_eq!(v, powermon_old_sample().encode());
        let v = timeout(T, p.read(&c)).await.unwrap().expect("read again");
        assert_eq!(v.len(), 52);
        p.disconnect().await.unwrap();
        // GATT objects go away on disconnect, as for an unpaired device.
        assert!(
            p.read(&c).await.is_err(),
            "read while disconnected must fail"
        );

        let p = find(&adapter, PM_NEW).await.expect("new powermon");
        connect(&p).await;
        let c = char_of(&p, POWERMON_NEW_CHAR);
        let v = timeout(T, p.read(&c)).await.unwrap().expect("read");
        assert_eq!(v.len(), 54);
        assert_eq!(v, powermon_new_sample().encode());
        p.disconnect().await.unwrap();
    });
}

fn child_refuse() {
    use btleplug::api::Peripheral as _;
    use child::*;
    child::run(async {
        let (_m, adapter) = adapter().await;
        let p = find(&adapter, JBD4).await.expect("jbd4");
        for i in 0..2 {
            let e = timeout(T, p.connect()).await.unwrap().expect_err("refused");
            assert!(
                e.to_string().contains("le-connection-abort-by-local"),
                "attempt {i}: {e}"
            );
            assert!(!p.is_connected().await.unwrap());
        }
        connect(&p).await;
        assert!(p.is_connected().await.unwrap());
        let _ = char_of(&p, JBD_WRITE);
        p.disconnect().await.unwrap();
    });
}

fn child_drop() {
    use btleplug::api::{Central, Peripheral as _, WriteType};
    use child::*;
    child::run(async {
        let (_m, adapter) = adapter().await;
        let mut events = adapter.events().await.expect("events");
        let p = find(&adapter, JBD4).await.expect("jbd4");
        let id = p.id();
        connect(&p).await;
        let notify = char_of(&p, JBD_NOTIFY);
        let write = char_of(&p, JBD_WRITE);
        let mut stream = p.notifications().await.expect("notifications");
        p.subscribe(&notify).await.expect("subscribe");

        // Phase 1: the mock drops the link after the first chunk of the reply.
        p.write(&write, &jbd_read_request(0x03), WriteType::WithoutResponse)
            .await
            .expect("write");
        let first = timeout(T, stream.next()).await.unwrap().unwrap();
        assert_eq!(first.value.len(), 20);
        wait_event(
            &mut events,
            "DeviceDisconnected",
            |e| matches!(e, Ev::DeviceDisconnected(d) if *d == id),
        )
        .await;
        assert!(!p.is_connected().await.unwrap());

        // Reconnect: discover and subscribe again; the old notification stream still works.
        connect(&p).await;
        let notify = char_of(&p, JBD_NOTIFY);
        let write = char_of(&p, JBD_WRITE);
        p.subscribe(&notify).await.expect("subscribe again");
        let (frame, _) = request(
            &p,
            &write,
            WriteType::WithoutResponse,
            0x04,
            &mut stream,
            JBD_NOTIFY,
        )
        .await;
        assert_eq!(frame, frames_4s()[&0x04]);

        // Phase 2: the parent drops the link.
        wait_event(
            &mut events,
            "DeviceDisconnected (parent)",
            |e| matches!(e, Ev::DeviceDisconnected(d) if *d == id),
        )
        .await;
        assert!(!p.is_connected().await.unwrap());
        assert!(
            p.write(&write, &jbd_read_request(0x03), WriteType::WithoutResponse)
                .await
                .is_err(),
            "write after link loss must fail"
        );
        drop(stream);
        drop(events);
    });
}

fn child_restart() {
    use btleplug::api::{Manager as _, Peripheral as _};
    use child::*;
    child::run(async {
        let (manager, adapter) = adapter().await;
        let p = find(&adapter, PM_OLD).await.expect("powermon");
        connect(&p).await;
        let c = char_of(&p, POWERMON_OLD_CHAR);
        p.read(&c).await.expect("read before restart");
        // Poll the adapter list through the restart (the parent keeps BlueZ away for 1 s).
        // Each call is bounded: busd, unlike dbus-daemon, does not answer a call to a name
        // nobody owns (no ServiceUnknown error), so such a call waits for libdbus's timeout.
        let mut seen_gone = false;
        let start = std::time::Instant::now();
        loop {
            let r = timeout(Duration::from_millis(400), manager.adapters()).await;
            let present = matches!(r, Ok(Ok(a)) if !a.is_empty());
            if !present {
                seen_gone = true;
            } else if seen_gone {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no restart seen (gone: {seen_gone})"
            );
            sleep(Duration::from_millis(50)).await;
        }
        // Back, with the device cached and disconnected; the old handles work again.
        let adapter = manager.adapters().await.unwrap().remove(0);
        let p2 = find(&adapter, PM_OLD).await.expect("device after restart");
        assert!(!p2.is_connected().await.unwrap());
        assert!(!p.is_connected().await.unwrap());
        connect(&p).await;
        let c = char_of(&p, POWERMON_OLD_CHAR);
        let v = timeout(T, p.read(&c))
            .await
            .unwrap()
            .expect("read after restart");
        assert_eq!(v.len(), 52);
        p.disconnect().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Our own harness (see the module docs).

const PARENTS: &[(&str, fn())] = &[
    ("frames_and_fixtures", frames_and_fixtures),
    (
        "scan_finds_device_not_yet_known",
        scan_finds_device_not_yet_known,
    ),
    (
        "jbd_request_reply_and_chunking",
        jbd_request_reply_and_chunking,
    ),
    ("jbd_faults_seen_by_btleplug", jbd_faults_seen_by_btleplug),
    ("powermon_reads_both_layouts", powermon_reads_both_layouts),
    (
        "refused_connects_then_success",
        refused_connects_then_success,
    ),
    (
        "dropped_link_reports_disconnect",
        dropped_link_reports_disconnect,
    ),
    (
        "restart_makes_adapter_vanish_and_return",
        restart_makes_adapter_vanish_and_return,
    ),
];

/// Run only with `--ignored` or `--include-ignored`, like `#[ignore = "..."]` tests.
const IGNORED: &[(&str, &str, fn())] = &[(
    "restart_on_dbus_daemon",
    "needs dbus-daemon; run by .ci/run",
    restart_on_dbus_daemon,
)];

const CHILDREN: &[(&str, fn())] = &[
    ("child_scan", child_scan),
    ("child_jbd", child_jbd),
    ("child_faults", child_faults),
    ("child_powermon", child_powermon),
    ("child_refuse", child_refuse),
    ("child_drop", child_drop),
    ("child_restart", child_restart),
];

fn main() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let (_, scenario) = CHILDREN
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no child scenario {name:?}"));
        scenario();
        println!("child {name} ok");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let (plain, ignored) = if has("--ignored") {
        (false, true)
    } else {
        (true, has("--include-ignored"))
    };
    let mut chosen: Vec<(&str, fn())> = Vec::new();
    if plain {
        chosen.extend(PARENTS.iter().copied());
    }
    for &(name, why, test) in IGNORED {
        if ignored {
            chosen.push((name, test));
        } else {
            println!("test {name} ... ignored, {why}");
        }
    }
    println!("\nrunning {} tests", chosen.len());
    let runs: Vec<_> = chosen
        .iter()
        .map(|&(name, test)| (name, std::thread::spawn(test)))
        .collect();
    let mut failed = Vec::new();
    for (name, handle) in runs {
        let ok = handle.join().is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(name);
        }
    }
    if failed.is_empty() {
        let skipped = if ignored { 0 } else { IGNORED.len() };
        println!(
            "\ntest result: ok. {} passed; 0 failed; {skipped} ignored",
            chosen.len()
        );
    } else {
        println!("\ntest result: FAILED. {} failed: {failed:?}", failed.len());
        std::process::exit(101);
    }
}
