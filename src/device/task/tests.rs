//! The device task's lifecycle, driven through a scripted fake transport on a paused tokio
//! clock: timeouts and backoff waits cost no wall time, and every assertion is on what the
//! task did (connects, disconnects, reads), not on how long it took.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use uuid::Uuid;

use super::*;
use crate::device::PollError;
use crate::devices::jbd::protocol::tests::{REAL_4S_CELLS, REAL_4S_INFO};
use crate::devices::jbd::protocol::{self as jbd, JbdReading};
use crate::devices::powermon::demo::PowermonSim;
use crate::devices::powermon::protocol::{self as powermon, PowermonReading};
use crate::devices::protocol::parse_hex;
use crate::log_capture as capture;
use crate::secret::Passkey;
use crate::transport::{CharInfo, Notification, PairError, WriteMode};

/// What the fake device does on one read.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// A valid new-firmware record.
    Record,
    /// A value of the wrong length: a decode error, not a timeout.
    Garbage,
    /// Never answers.
    Hang,
    /// A valid record with a power status of 200 and firmware word 0x0A3F (not BCD).
    Implausible,
    /// The transport's read fails (the fake stays connected, and `lost` does not fire).
    Fail(fn() -> LinkError),
}

/// What the fake device does on one connect.
#[derive(Debug, Clone)]
enum Connect {
    Ok,
    Fail(LinkError),
    Hang,
}

#[derive(Default)]
struct Script {
    connects: Vec<Instant>,
    disconnects: u32,
    reads: u32,
    connected: bool,
    /// Popped per connect; empty = succeed.
    connect_steps: VecDeque<Connect>,
    /// Used when `connect_steps` is empty and this is set.
    connect_always: Option<Connect>,
    /// Popped per read; empty = a valid record.
    read_steps: VecDeque<Read>,
    /// What `disconnect` reports.
    disconnect_confirms: bool,
    /// Notifications not yet read (when the fake is a JBD).
    notifications: VecDeque<Vec<u8>>,
    /// Pairing firmware: as a JBD, echoes every write until paired.
    echoes_until_paired: bool,
    paired: bool,
    /// The passkeys `pair` was called with.
    pairings: Vec<u32>,
    /// The passkey that pairs (anything else fails with AuthenticationFailed).
    right_passkey: u32,
}

#[derive(Clone)]
struct Fake {
    s: Arc<Mutex<Script>>,
    lose: Arc<Notify>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            s: Arc::new(Mutex::new(Script {
                disconnect_confirms: true,
                ..Script::default()
            })),
            lose: Arc::new(Notify::new()),
        }
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.s.lock().unwrap()
    }

    fn connects(&self) -> usize {
        self.script().connects.len()
    }

    fn disconnects(&self) -> u32 {
        self.script().disconnects
    }

    /// The device drops the link.
    fn drop_link(&self) {
        self.script().connected = false;
        self.lose.notify_one();
    }
}

/// What the fake offers: a JBD's notify and write characteristics and a PowerMon's record.
fn characteristics() -> Vec<CharInfo> {
    [
        (jbd::NOTIFY_UUID, jbd::SERVICE_UUID),
        (jbd::WRITE_UUID, jbd::SERVICE_UUID),
        (powermon::NEW_RECORD_UUID, powermon::NEW_SERVICE_UUID),
    ]
    .into_iter()
    .map(|(uuid, service)| CharInfo {
        uuid,
        service,
        write_without_response: true,
    })
    .collect()
}

impl Transport for Fake {
    async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
        let step = {
            let mut s = self.script();
            s.connects.push(Instant::now());
            let always = s.connect_always.clone();
            s.connect_steps
                .pop_front()
                .or(always)
                .unwrap_or(Connect::Ok)
        };
        match step {
            Connect::Ok => {
                self.script().connected = true;
                Ok(characteristics())
            }
            Connect::Fail(e) => Err(e),
            Connect::Hang => std::future::pending().await,
        }
    }

    async fn disconnect(&mut self) -> bool {
        let mut s = self.script();
        s.disconnects += 1;
        s.connected = false;
        s.disconnect_confirms
    }

    /// As a JBD: answers 0x03 and 0x04 with patman15's 4S capture (its pack voltage, 15.60 V,
    /// is 1.9 V from the sum of its cells) and refuses 0x05.
    async fn subscribe(&mut self, characteristic: Uuid) -> Result<(), LinkError> {
        assert_eq!(characteristic, jbd::NOTIFY_UUID);
        Ok(())
    }

    async fn write(&mut self, to: Uuid, data: &[u8], _: WriteMode) -> Result<(), LinkError> {
        assert_eq!(to, jbd::WRITE_UUID);
        let echo = {
            let s = self.script();
            s.echoes_until_paired && !s.paired
        };
        if echo {
            self.script().notifications.push_back(data.to_vec());
            return Ok(());
        }
        // A dongle without a password: handshake frames go unanswered.
        if data.starts_with(&[0xFF, 0xAA]) {
            return Ok(());
        }
        let reply = match jbd::parse_read_request(data).expect("a read request") {
            3 => parse_hex(REAL_4S_INFO).unwrap(),
            4 => parse_hex(REAL_4S_CELLS).unwrap(),
            r => jbd::encode_reply(r, 0x80, &[]),
        };
        self.script().notifications.push_back(reply);
        Ok(())
    }

    async fn notification(&mut self) -> Result<Notification, LinkError> {
        let next = self.script().notifications.pop_front();
        match next {
            Some(value) => Ok(Notification {
                characteristic: jbd::NOTIFY_UUID,
                value,
            }),
            None => std::future::pending().await,
        }
    }

    fn drain(&mut self) -> usize {
        let mut s = self.script();
        let n = s.notifications.len();
        s.notifications.clear();
        n
    }

    async fn read(&mut self, from: Uuid) -> Result<Vec<u8>, LinkError> {
        assert_eq!(from, powermon::NEW_RECORD_UUID);
        let step = {
            let mut s = self.script();
            s.reads += 1;
            if !s.connected {
                return Err(LinkError::Disconnected);
            }
            s.read_steps.pop_front().unwrap_or(Read::Record)
        };
        match step {
            Read::Record => Ok(PowermonSim {
                voltage_v: 13.3,
                current_a: -4.0,
            }
            .record(0.0)),
            Read::Garbage => Ok(vec![0; 7]),
            Read::Implausible => {
                let raw = PowermonSim {
                    voltage_v: 13.3,
                    current_a: -4.0,
                }
                .record(0.0);
                let mut rec: [u8; powermon::NEW_RECORD_LEN] = powermon::decode_cobs_frame(&raw)
                    .unwrap()
                    .try_into()
                    .unwrap();
                rec[0..2].copy_from_slice(&0x0A3Fu16.to_le_bytes());
                rec[47] = 200;
                Ok(powermon::encode_cobs_frame(&rec))
            }
            Read::Hang => std::future::pending().await,
            Read::Fail(e) => Err(e()),
        }
    }

    async fn pair(&mut self, passkey: Passkey) -> Result<(), PairError> {
        let mut s = self.script();
        s.pairings.push(passkey.value());
        if passkey.value() == s.right_passkey {
            s.paired = true;
            Ok(())
        } else {
            Err(PairError::AuthenticationFailed)
        }
    }

    async fn lost(&mut self) {
        if self.script().connected {
            self.lose.notified().await;
        } else {
            std::future::pending().await
        }
    }
}

fn spec() -> DeviceSpec {
    DeviceSpec {
        name: "pm".into(),
        kind: &crate::devices::powermon::KIND,
        address: "AA:BB:CC:DD:EE:03".into(),
        timeout: Duration::from_secs(5),
        adapter: None,
        password: None,
        passkey: None,
        key: None,
    }
}

fn other_error() -> LinkError {
    LinkError::Bluetooth {
        cause: Cause::Other,
        name: Some("org.bluez.Error.Failed".into()),
        message: "Input/output error".into(),
    }
}

/// Lets the task run until `done` holds (the paused clock advances only when every task
/// waits on a timer, so this is deterministic). Panics after a generous bound of steps.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(start_paused = true)]
async fn two_missed_replies_in_a_row_reconnect() {
    let fake = Fake::new();
    fake.script().read_steps = [Read::Hang, Read::Hang].into();
    let h = spawn(spec(), fake.clone());
    assert!(
        h.poll()
            .await
            .unwrap_err()
            .to_string()
            .contains("timed out")
    );
    assert_eq!(fake.disconnects(), 0, "one miss is not a dead link");
    assert!(h.poll().await.is_err());
    assert_eq!(fake.disconnects(), 1, "two misses in a row: reconnect");
    let reading = h.poll().await.expect("reconnected and polled");
    assert_eq!(reading.device, "pm");
    assert_eq!(fake.connects(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_transport_error_in_a_poll_re_establishes_the_link_at_once() {
    let fake = Fake::new();
    fake.script().read_steps = [Read::Fail(other_error)].into();
    let h = spawn(spec(), fake.clone());
    assert!(h.poll().await.is_err());
    assert_eq!(fake.disconnects(), 1, "a broken link is torn down");
    let reading = h.poll().await.expect("reconnected and polled");
    assert_eq!(reading.device, "pm");
    assert_eq!(fake.connects(), 2);
}

#[tokio::test(start_paused = true)]
async fn one_transport_timeout_is_a_miss_not_a_broken_link() {
    let fake = Fake::new();
    fake.script().read_steps = [Read::Fail(|| LinkError::Timeout {
        what: "read",
        after: Duration::from_secs(5),
    })]
    .into();
    let h = spawn(spec(), fake.clone());
    assert!(
        h.poll()
            .await
            .unwrap_err()
            .to_string()
            .contains("timed out")
    );
    assert_eq!(fake.disconnects(), 0);
    assert!(h.poll().await.is_ok());
    assert_eq!(fake.connects(), 1);
}

#[tokio::test(start_paused = true)]
async fn misses_broken_by_another_outcome_are_not_in_a_row() {
    let fake = Fake::new();
    fake.script().read_steps = [Read::Hang, Read::Garbage, Read::Hang].into();
    let h = spawn(spec(), fake.clone());
    for _ in 0..3 {
        assert!(h.poll().await.is_err());
    }
    assert_eq!(
        fake.disconnects(),
        0,
        "miss, decode error, miss: no reconnect"
    );
    assert!(h.poll().await.is_ok());
    assert_eq!(fake.connects(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_link_lost_while_idle_is_reconnected_before_the_next_poll() {
    let fake = Fake::new();
    let h = spawn(spec(), fake.clone());
    h.poll().await.expect("first poll");
    fake.drop_link();
    until("a reconnect without any poll", || fake.connects() == 2).await;
    assert_eq!(fake.disconnects(), 1, "the lost link is cleaned up first");
    h.poll()
        .await
        .expect("the poll after a drop gets its reading");
    assert_eq!(fake.script().reads, 2, "no read was spent on the dead link");
}

#[tokio::test(start_paused = true)]
async fn connect_failures_back_off_1_2_4_to_60_seconds_with_bounded_jitter() {
    let fake = Fake::new();
    fake.script().connect_always = Some(Connect::Fail(other_error()));
    let h = spawn(spec(), fake.clone());
    tokio::time::sleep(Duration::from_secs(700)).await;
    let times = fake.script().connects.clone();
    assert!(times.len() >= 12, "{} attempts in 700 s", times.len());
    let mut base = Duration::ZERO;
    for (i, w) in times.windows(2).enumerate() {
        base = next_base(base);
        let gap = w[1] - w[0];
        let lo = base.mul_f64(0.8);
        let hi = base.mul_f64(1.2).min(BACKOFF_MAX);
        assert!(
            gap >= lo && gap <= hi,
            "attempt {i}: waited {gap:?}, base {base:?}"
        );
    }
    assert_eq!(base, BACKOFF_MAX, "reaches the cap");
    assert!(h.poll().await.is_err());
}

#[test]
fn backoff_bases_are_exactly_1_2_4_to_60_and_jitter_never_compounds() {
    let mut b = Duration::ZERO;
    let bases: Vec<u64> = (0..9)
        .map(|_| {
            b = next_base(b);
            b.as_secs()
        })
        .collect();
    assert_eq!(bases, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    let s = Duration::from_secs;
    assert_eq!(jittered(s(1), 0.0), Duration::from_millis(800));
    assert_eq!(jittered(s(10), 0.5), s(10));
    assert!(jittered(s(1), 0.999_999) > Duration::from_millis(1199));
    assert_eq!(jittered(s(60), 0.999_999), s(60), "never past the cap");
    assert_eq!(jittered(s(60), 0.0), s(48));
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_connect_cancels_it_and_confirms() {
    let fake = Fake::new();
    fake.script().connect_steps = [Connect::Hang].into();
    let h = spawn(spec(), fake.clone());
    until("a connect in flight", || fake.connects() == 1).await;
    assert!(h.shutdown().await, "disconnect confirmed");
    assert_eq!(fake.disconnects(), 1, "the pending connect was cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_backoff_wait_ends_the_task_at_once() {
    let fake = Fake::new();
    fake.script().connect_always = Some(Connect::Fail(other_error()));
    let h = spawn(spec(), fake.clone());
    until("a failed connect", || fake.disconnects() == 1).await;
    let t0 = Instant::now();
    assert!(h.shutdown().await);
    assert!(
        t0.elapsed() < BACKOFF_START.mul_f64(0.8),
        "waited out the backoff"
    );
    assert_eq!(fake.connects(), 1, "no retry after the stop");
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_poll_interrupts_it() {
    let fake = Fake::new();
    fake.script().read_steps = [Read::Hang].into();
    let (polls, polls_rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let meter = Meter::volatile("pm", "AA:BB:CC:DD:EE:03");
    let task =
        tokio::spawn(Task::new(Arc::new(spec()), fake.clone(), meter).run(polls_rx, stop_rx));
    let (reply, answer) = oneshot::channel();
    polls.send(reply).await.unwrap();
    until("a read in flight", || fake.script().reads == 1).await;
    let t0 = Instant::now();
    stop.send(true).unwrap();
    assert!(task.await.unwrap(), "disconnect confirmed");
    assert!(
        t0.elapsed() < spec().timeout,
        "waited for the read to time out"
    );
    assert!(
        answer.await.is_err(),
        "the interrupted poll gets no reading"
    );
    assert_eq!(fake.disconnects(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_says_when_a_disconnect_is_not_confirmed() {
    let fake = Fake::new();
    fake.script().disconnect_confirms = false;
    let h = spawn(spec(), fake.clone());
    h.poll().await.unwrap();
    assert!(!h.shutdown().await);
}

#[test]
fn hints_match_the_cause_not_the_text() {
    use crate::devices::jbd::KIND as JBD;
    use crate::devices::powermon::KIND as POWERMON;
    let link = |cause, name: &str, message: &str| {
        PollError::Link(LinkError::Bluetooth {
            cause,
            name: Some(name.into()),
            message: message.into(),
        })
    };
    let aborted = link(
        Cause::ConnectAborted,
        "org.bluez.Error.Failed",
        "le-connection-abort-by-local",
    );
    assert!(hint(&JBD, &aborted).contains("phone app"));
    assert_eq!(hint(&POWERMON, &aborted), "");
    // Any other BlueZ "Failed" is not the phone app.
    let io = link(Cause::Other, "org.bluez.Error.Failed", "Input/output error");
    assert_eq!(hint(&JBD, &io), "");
    let denied = link(
        Cause::AccessDenied,
        "org.freedesktop.DBus.Error.AccessDenied",
        "Rejected send message",
    );
    assert!(hint(&POWERMON, &denied).contains("group `bluetooth`"));
    // Pairing: the kind's own words where it has them, else the generic fix.
    let pairing = PollError::PairingRequired;
    assert!(hint(&JBD, &pairing).contains("often 123456"));
    assert!(hint(&POWERMON, &pairing).contains("blebatt pair"));
    assert!(!hint(&POWERMON, &pairing).contains("123456"));
    let gone = link(
        Cause::BluezUnavailable,
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "The name org.bluez was not provided",
    );
    assert!(hint(&JBD, &gone).contains("bluetoothd"));
    let off = link(
        Cause::AdapterNotReady,
        "org.bluez.Error.NotReady",
        "Resource Not Ready",
    );
    assert!(hint(&JBD, &off).contains("power on"));
    let busy = link(
        Cause::InProgress,
        "org.bluez.Error.InProgress",
        "In Progress",
    );
    assert!(hint(&JBD, &busy).contains("another program"));
    let no_reply = PollError::NoReply {
        request: "register 0x03",
        after: Duration::from_secs(5),
    };
    assert!(hint(&JBD, &no_reply).contains("2 misses in a row"));
    assert_eq!(hint(&POWERMON, &no_reply), "");
    let connect_timeout = PollError::Link(LinkError::Timeout {
        what: "connect",
        after: Duration::from_secs(10),
    });
    assert!(hint(&JBD, &connect_timeout).contains("phone app"));
    assert_eq!(hint(&POWERMON, &connect_timeout), "");
}

#[tokio::test(start_paused = true)]
async fn an_omitted_field_is_logged_at_debug_once_per_connection() {
    capture::start();
    let fake = Fake::new();
    fake.script().read_steps = [Read::Implausible; 5].into();
    let h = spawn(spec(), fake.clone());
    for _ in 0..3 {
        let r = h.poll().await.unwrap();
        let pm: &PowermonReading = r
            .values
            .as_any()
            .downcast_ref()
            .expect("a PowerMon reading");
        assert_eq!(
            (pm.power_status, pm.firmware_version.as_deref()),
            (None, None)
        );
    }
    let status = "pm (AA:BB:CC:DD:EE:03): power status omitted: raw 200";
    let firmware = "pm (AA:BB:CC:DD:EE:03): firmware version (BCD) omitted: raw 2623 (0xA3F)";
    assert_eq!(
        capture::count(log::Level::Debug, status),
        1,
        "3 polls, 1 line"
    );
    assert_eq!(capture::count(log::Level::Debug, firmware), 1);
    // A new connection says it again, once.
    fake.drop_link();
    until("reconnected", || fake.connects() == 2).await;
    for _ in 0..2 {
        h.poll().await.unwrap();
    }
    assert_eq!(capture::count(log::Level::Debug, status), 2);
    assert_eq!(capture::count(log::Level::Debug, firmware), 2);
    assert_eq!(capture::count(log::Level::Warn, "omitted"), 0, "debug only");
}

#[tokio::test(start_paused = true)]
async fn a_pack_voltage_far_from_its_cells_is_one_warning_per_connection() {
    capture::start();
    let fake = Fake::new();
    let h = spawn(
        DeviceSpec {
            name: "house".into(),
            kind: &crate::devices::jbd::KIND,
            ..spec()
        },
        fake.clone(),
    );
    let warning = "house (AA:BB:CC:DD:EE:03): pack voltage 15.60 V (register 0x03) is 1.90 V \
                   from the sum of its cells, 13.704 V";
    for _ in 0..3 {
        let r = h.poll().await.unwrap();
        let j: &JbdReading = r.values.as_any().downcast_ref().expect("a JBD reading");
        assert_eq!(j.info.voltage_v, 15.6, "printed as read");
    }
    assert_eq!(
        capture::count(log::Level::Warn, warning),
        1,
        "3 polls, 1 warning"
    );
    fake.drop_link();
    until("reconnected", || fake.connects() == 2).await;
    h.poll().await.unwrap();
    assert_eq!(
        capture::count(log::Level::Warn, warning),
        2,
        "again after a reconnect"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connect_failure_is_one_warning_per_change_not_one_per_attempt() {
    capture::start();
    let fake = Fake::new();
    fake.script().connect_steps = [
        Connect::Fail(other_error()),
        Connect::Fail(other_error()),
        Connect::Fail(other_error()),
        Connect::Fail(LinkError::NotFound),
        Connect::Ok,
        // After the drop below: the same error as the loss, then back.
        Connect::Fail(LinkError::Disconnected),
        Connect::Ok,
    ]
    .into();
    let _h = spawn(spec(), fake.clone());
    // Four backoff waits: at most 1.2 * (1 + 2 + 4 + 8) s on the paused clock.
    tokio::time::sleep(Duration::from_secs(20)).await;
    until("connected after four failures", || fake.script().connected).await;
    let warned = || capture::count(log::Level::Warn, "connect failed");
    let again = || capture::count(log::Level::Debug, "connect failed again");
    assert_eq!(warned(), 2, "the first failure, then the new error");
    assert_eq!(again(), 2, "the repeats of the first error");
    fake.drop_link();
    until("reconnected after the drop", || fake.connects() == 7).await;
    assert_eq!(
        warned(),
        3,
        "a failure right after a loss is a new episode, even with the loss's own error"
    );
    assert_eq!(again(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_repeating_poll_failure_is_one_warning_and_recovery_is_said() {
    capture::start();
    let fake = Fake::new();
    fake.script().read_steps = [Read::Garbage, Read::Garbage, Read::Garbage].into();
    let h = spawn(spec(), fake.clone());
    for _ in 0..3 {
        assert!(h.poll().await.is_err());
    }
    assert_eq!(capture::count(log::Level::Warn, "poll failed"), 1);
    assert!(h.poll().await.is_ok());
    assert_eq!(capture::count(log::Level::Info, "polling again"), 1);
    assert_eq!(fake.connects(), 1, "a decode error is not a broken link");
}

/// A JBD whose firmware wants pairing (passkey 123456).
fn pairing_bms(passkey: Option<&str>) -> (DeviceSpec, Fake) {
    let fake = Fake::new();
    {
        let mut s = fake.script();
        s.echoes_until_paired = true;
        s.right_passkey = 123_456;
    }
    let spec = DeviceSpec {
        name: "house".into(),
        kind: &crate::devices::jbd::KIND,
        passkey: passkey.map(|p| Passkey::parse(p).unwrap()),
        key: None,
        ..spec()
    };
    (spec, fake)
}

#[tokio::test(start_paused = true)]
async fn an_echoing_bms_with_a_passkey_is_paired_once_and_then_polled() {
    capture::start();
    let (spec, fake) = pairing_bms(Some("123456"));
    let h = spawn(spec, fake.clone());
    let err = h.poll().await.unwrap_err();
    assert!(
        matches!(
            &err,
            DeviceError::Poll {
                source: PollError::PairingRequired,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(fake.script().pairings, [123_456]);
    assert_eq!(
        capture::count(log::Level::Info, "house (AA:BB:CC:DD:EE:03): paired"),
        1
    );
    for _ in 0..3 {
        h.poll().await.expect("polled over the bond");
    }
    assert_eq!(fake.connects(), 2, "one reconnect, after pairing");
    assert_eq!(fake.script().pairings.len(), 1);
    assert_eq!(capture::count(log::Level::Error, ""), 0);
}

#[tokio::test(start_paused = true)]
async fn an_echoing_bms_without_a_passkey_is_one_error_with_the_command_and_is_let_go() {
    capture::start();
    let (spec, fake) = pairing_bms(None);
    let h = spawn(spec, fake.clone());
    let mut connects_at_poll = Vec::new();
    for _ in 0..6 {
        let err = h.poll().await.unwrap_err();
        assert!(
            !fake.script().connected,
            "its one connection is let go: {err}"
        );
        connects_at_poll.push(fake.connects());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        capture::count(
            log::Level::Error,
            "house (AA:BB:CC:DD:EE:03) requires Bluetooth pairing"
        ),
        1,
        "said once"
    );
    assert_eq!(
        capture::count(log::Level::Error, "`blebatt pair AA:BB:CC:DD:EE:03`"),
        1
    );
    assert_eq!(capture::count(log::Level::Error, "often 123456"), 1);
    assert!(fake.script().pairings.is_empty());
    // Backing off: six polls a second apart do not reconnect six times.
    assert!(fake.connects() < 6, "{connects_at_poll:?}");
}

#[tokio::test(start_paused = true)]
async fn a_wrong_passkey_is_said_and_not_tried_again_for_ten_minutes() {
    capture::start();
    let (spec, fake) = pairing_bms(Some("654321"));
    let h = spawn(spec, fake.clone());
    for _ in 0..5 {
        assert!(h.poll().await.is_err());
        tokio::time::sleep(Duration::from_secs(61)).await;
    }
    assert_eq!(fake.script().pairings, [654_321], "once in five minutes");
    assert_eq!(
        capture::count(log::Level::Error, "pairing failed: authentication failed"),
        1
    );
    tokio::time::sleep(PAIR_RETRY).await;
    let _ = h.poll().await;
    assert_eq!(
        fake.script().pairings.len(),
        2,
        "tried again after {PAIR_RETRY:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_echo_during_the_password_handshake_is_paired_by_the_connect_itself() {
    capture::start();
    let (spec, fake) = pairing_bms(Some("123456"));
    let spec = DeviceSpec {
        password: Some(crate::secret::Secret::new("123456")),
        ..spec
    };
    let h = spawn(spec, fake.clone());
    // The connect's handshake meets the echo: pair, reconnect; the handshake then goes
    // unanswered (this dongle has no password) and the poll reads.
    h.poll().await.expect("read after pairing at connect");
    assert_eq!(fake.script().pairings, [123_456]);
    assert_eq!(fake.connects(), 2);
    assert_eq!(capture::count(log::Level::Warn, "connect failed"), 0);
}

#[tokio::test(start_paused = true)]
async fn an_echo_during_the_handshake_without_a_passkey_is_said_once_and_backed_off() {
    capture::start();
    let (spec, fake) = pairing_bms(None);
    let spec = DeviceSpec {
        password: Some(crate::secret::Secret::new("123456")),
        ..spec
    };
    let _h = spawn(spec, fake.clone());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        capture::count(log::Level::Error, "requires Bluetooth pairing"),
        1
    );
    assert_eq!(capture::count(log::Level::Warn, "connect failed"), 0);
    // Backing off: 1 + 2 + 4 + 8 + 16 s (+-20 %) fit in a minute, 32 more do not.
    let n = fake.connects();
    assert!((4..=7).contains(&n), "{n} connects in a minute");
    assert!(!fake.script().connected, "its one connection is let go");
    assert!(fake.script().pairings.is_empty());
}

/// A passive device's radio: scripted advertisements, listens counted; connecting is a bug.
#[derive(Clone, Default)]
struct Radio {
    s: Arc<Mutex<RadioScript>>,
}

#[derive(Default)]
struct RadioScript {
    /// The next `advertisement` calls' results, in order; empty: nothing heard (pending).
    heard: VecDeque<Vec<u8>>,
    listens: u32,
    connects: u32,
    disconnects: u32,
}

impl Radio {
    fn hear(&self, data: Vec<u8>) {
        self.s.lock().unwrap().heard.push_back(data);
    }
}

impl Transport for Radio {
    async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
        self.s.lock().unwrap().connects += 1;
        Err(LinkError::NotFound)
    }
    async fn disconnect(&mut self) -> bool {
        self.s.lock().unwrap().disconnects += 1;
        true
    }
    async fn subscribe(&mut self, _: Uuid) -> Result<(), LinkError> {
        Err(LinkError::NotConnected)
    }
    async fn write(&mut self, _: Uuid, _: &[u8], _: WriteMode) -> Result<(), LinkError> {
        Err(LinkError::NotConnected)
    }
    async fn notification(&mut self) -> Result<Notification, LinkError> {
        std::future::pending().await
    }
    fn drain(&mut self) -> usize {
        0
    }
    async fn read(&mut self, _: Uuid) -> Result<Vec<u8>, LinkError> {
        Err(LinkError::NotConnected)
    }
    async fn lost(&mut self) {
        std::future::pending().await
    }
    async fn listen(&mut self, _: u16) -> Result<(), LinkError> {
        self.s.lock().unwrap().listens += 1;
        Ok(())
    }
    async fn advertisement(&mut self) -> Result<crate::transport::Advert, LinkError> {
        let next = self.s.lock().unwrap().heard.pop_front();
        match next {
            Some(data) => Ok(crate::transport::Advert {
                data,
                heard: Instant::now(),
            }),
            None => std::future::pending().await,
        }
    }
}

const VICTRON_KEY: &str = "aff4d0995b7d1e176c0c33ecb9e70dcd";

fn shunt_advert(key: &str) -> Vec<u8> {
    use crate::devices::victron::protocol::{Key, RECORD_BATTERY_MONITOR, seal};
    let plain = parse_hex("ff ff e5 04 00 00 00 00 03 00 00 f4 01 40 df").unwrap();
    seal(
        0xA389,
        RECORD_BATTERY_MONITOR,
        1,
        &Key::parse(key).unwrap(),
        &plain,
    )
}

fn shunt_spec() -> DeviceSpec {
    DeviceSpec {
        name: "shunt".into(),
        kind: &crate::devices::victron::KIND,
        address: "C0:3B:98:00:00:01".into(),
        timeout: Duration::from_secs(5),
        adapter: None,
        password: None,
        passkey: None,
        key: Some(crate::secret::Secret::new(VICTRON_KEY)),
    }
}

#[tokio::test(start_paused = true)]
async fn a_passive_device_is_listened_to_never_connected_and_silence_is_one_warning() {
    capture::start();
    let radio = Radio::default();
    let h = spawn(shunt_spec(), radio.clone());
    for _ in 0..4 {
        let e = h.poll().await.unwrap_err();
        assert!(
            matches!(&e, DeviceError::Poll { source: PollError::Silent { .. }, hint, .. } if hint.contains("in range")),
            "{e:?}"
        );
    }
    {
        let s = radio.s.lock().unwrap();
        assert_eq!(s.connects, 0, "never connected");
        assert_eq!(
            s.disconnects, 0,
            "silence is not a broken link: no reconnect"
        );
        assert_eq!(s.listens, 1);
    }
    assert_eq!(
        capture::count(
            log::Level::Warn,
            "shunt (C0:3B:98:00:00:01): poll failed: no advertisement heard"
        ),
        1
    );
    assert_eq!(
        capture::count(
            log::Level::Info,
            "shunt (C0:3B:98:00:00:01): listening for its advertisements"
        ),
        1
    );
    radio.hear(shunt_advert(VICTRON_KEY));
    assert!(h.poll().await.is_ok());
    assert!(h.shutdown().await);
}

#[tokio::test(start_paused = true)]
async fn nothing_new_from_a_passive_device_is_no_line_and_no_warning() {
    capture::start();
    let radio = Radio::default();
    radio.hear(shunt_advert(VICTRON_KEY));
    let h = spawn(shunt_spec(), radio.clone());
    assert!(h.poll().await.is_ok());
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(5)).await;
        let e = h.poll().await.unwrap_err();
        assert!(
            matches!(
                &e,
                DeviceError::Poll {
                    source: PollError::NothingNew,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    assert_eq!(
        capture::count(log::Level::Warn, "shunt (C0:3B:98:00:00:01)"),
        0
    );
    radio.hear(shunt_advert(VICTRON_KEY));
    assert!(h.poll().await.is_ok());
    assert_eq!(radio.s.lock().unwrap().disconnects, 0);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_key_is_one_error_with_where_the_key_is_and_polling_goes_on() {
    capture::start();
    let radio = Radio::default();
    let wrong = "adeccb947395801a4dd45a2eaa44bf17";
    radio.s.lock().unwrap().heard = [
        shunt_advert(wrong),
        shunt_advert(wrong),
        shunt_advert(wrong),
    ]
    .into();
    let h = spawn(shunt_spec(), radio.clone());
    for _ in 0..3 {
        let e = h.poll().await.unwrap_err();
        assert!(
            matches!(
                &e,
                DeviceError::Poll {
                    source: PollError::Misconfigured(_),
                    ..
                }
            ),
            "{e:?}"
        );
    }
    assert_eq!(
        capture::count(
            log::Level::Error,
            "shunt (C0:3B:98:00:00:01): the advertisement key does not match"
        ),
        1
    );
    assert_eq!(
        capture::count(log::Level::Error, "Instant readout details"),
        1
    );
    assert_eq!(
        capture::count(log::Level::Warn, "shunt (C0:3B:98:00:00:01)"),
        0
    );
    let s = radio.s.lock().unwrap();
    assert_eq!((s.connects, s.disconnects), (0, 0));
}
