//! JBD requests over a scripted fake BMS on a paused tokio clock: what the BMS sends (and what
//! sits queued from before) is scripted per request; a silent BMS costs no wall time.

use std::collections::{HashMap, VecDeque};

use super::*;
use crate::devices::jbd::protocol::tests::{REAL_4S_CELLS, REAL_4S_INFO};
use crate::devices::protocol::parse_hex;
use crate::log_capture as capture;
use crate::transport::{Notification, Transport};

const TIMEOUT: Duration = Duration::from_secs(5);
/// A 16S pack's 0x03 reply: here the stale answer to an earlier request.
const STALE_16S_INFO: &str = "DD 03 00 1F 14 B1 FD 4C 46 51 4E 20 00 01 26 54 00 00 00 00 00 00 20 5A 03 10 04 0B 14 0B 35 0B 80 0B 61 FA 6C 77";

fn hex(s: &str) -> Vec<u8> {
    parse_hex(s).unwrap()
}

/// The reply as a dongle sends it: 20-byte notifications.
fn notifications(frame: &[u8]) -> Vec<Vec<u8>> {
    frame.chunks(20).map(<[u8]>::to_vec).collect()
}

/// `frame` with one data byte flipped: its checksum no longer verifies.
fn corrupt(frame: &str) -> Vec<u8> {
    let mut f = hex(frame);
    f[5] ^= 0x01;
    f
}

struct FakeBms {
    /// Notifications arrived and not yet read.
    queue: VecDeque<Vec<u8>>,
    /// Per register: what the BMS sends for each request of it, in turn (none left: silence).
    replies: HashMap<u8, VecDeque<Vec<Vec<u8>>>>,
    /// Registers asked, in order.
    asked: Vec<u8>,
    /// Per register: the transport fails the write of its request with this (once).
    write_fails: HashMap<u8, LinkError>,
    /// What the session subscribed, and where and how it wrote each request.
    subscribed: Vec<Uuid>,
    writes_to: Vec<(Uuid, WriteMode)>,
    /// The characteristic the notifications come from.
    notifies_on: Uuid,
}

impl Default for FakeBms {
    fn default() -> Self {
        FakeBms {
            queue: VecDeque::new(),
            replies: HashMap::new(),
            asked: Vec::new(),
            write_fails: HashMap::new(),
            subscribed: Vec::new(),
            writes_to: Vec::new(),
            notifies_on: jbd::NOTIFY_UUID,
        }
    }
}

impl FakeBms {
    fn answers(mut self, register: Register, notifications: Vec<Vec<u8>>) -> Self {
        self.replies
            .entry(register.code())
            .or_default()
            .push_back(notifications);
        self
    }
}

impl Transport for FakeBms {
    async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
        unreachable!("the session is handed a connected link")
    }

    async fn subscribe(&mut self, characteristic: Uuid) -> Result<(), LinkError> {
        self.subscribed.push(characteristic);
        Ok(())
    }

    async fn disconnect(&mut self) -> bool {
        true
    }

    async fn write(&mut self, to: Uuid, data: &[u8], mode: WriteMode) -> Result<(), LinkError> {
        self.writes_to.push((to, mode));
        let register = jbd::parse_read_request(data).expect("only read requests are written");
        self.asked.push(register);
        if let Some(e) = self.write_fails.remove(&register) {
            return Err(e);
        }
        if let Some(reply) = self
            .replies
            .get_mut(&register)
            .and_then(VecDeque::pop_front)
        {
            self.queue.extend(reply);
        }
        Ok(())
    }

    async fn notification(&mut self) -> Result<Notification, LinkError> {
        match self.queue.pop_front() {
            Some(value) => Ok(Notification {
                characteristic: self.notifies_on,
                value,
            }),
            None => std::future::pending().await,
        }
    }

    fn drain(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        n
    }

    async fn read(&mut self, _: Uuid) -> Result<Vec<u8>, LinkError> {
        unreachable!("a JBD is never read")
    }

    async fn lost(&mut self) {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_transport_timeout_asking_the_name_does_not_cost_the_reading() {
    let mut bms = FakeBms::default()
        .answers(Register::BasicInfo, notifications(&hex(REAL_4S_INFO)))
        .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)));
    bms.write_fails.insert(
        5,
        LinkError::Timeout {
            what: "write",
            after: TIMEOUT,
        },
    );
    let mut session = JbdSession::new();
    let (reading, _) = poll_jbd(&mut bms, &mut session, TIMEOUT).await.unwrap();
    assert_eq!(reading.model, None);
    assert_eq!(bms.asked, [5, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_broken_link_asking_the_name_ends_the_poll_at_once() {
    let mut bms = FakeBms::default()
        .answers(Register::BasicInfo, notifications(&hex(REAL_4S_INFO)))
        .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)));
    bms.write_fails.insert(5, LinkError::Disconnected);
    let mut session = JbdSession::new();
    let err = poll_jbd(&mut bms, &mut session, TIMEOUT).await.unwrap_err();
    assert_eq!(err, PollError::Link(LinkError::Disconnected));
    assert!(err.is_link_fatal());
    assert_eq!(bms.asked, [5], "nothing more is written to a dead link");
}

fn named_bms() -> FakeBms {
    FakeBms::default().answers(
        Register::DeviceName,
        notifications(&jbd::encode_reply(5, 0, b"SP04S034")),
    )
}

#[tokio::test(start_paused = true)]
async fn poll_asks_the_name_once_per_session_then_info_and_cells() {
    let mut bms = named_bms();
    for _ in 0..2 {
        bms = bms
            .answers(Register::BasicInfo, notifications(&hex(REAL_4S_INFO)))
            .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)));
    }
    let mut session = JbdSession::new();
    for _ in 0..2 {
        let (reading, _) = poll_jbd(&mut bms, &mut session, TIMEOUT).await.unwrap();
        assert_eq!(reading.info.voltage_v, 15.6);
        assert_eq!(reading.cells.volts, vec![3.43, 3.425, 3.432, 3.417]);
        assert_eq!(reading.model.as_deref(), Some("SP04S034"));
    }
    assert_eq!(bms.asked, vec![5, 3, 4, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_stale_reply_queued_before_the_request_is_not_taken_as_the_answer() {
    // A 0x03 reply that came in after an earlier request gave up sits in the queue; the
    // request must drop it and wait for the answer to itself.
    let mut bms = named_bms()
        .answers(Register::BasicInfo, notifications(&hex(REAL_4S_INFO)))
        .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)));
    let mut session = JbdSession {
        model: Some(None),
        ..JbdSession::new()
    };
    bms.queue.extend(notifications(&hex(STALE_16S_INFO)));
    capture::start();
    let (reading, _) = poll_jbd(&mut bms, &mut session, TIMEOUT).await.unwrap();
    assert_eq!(
        reading.info.voltage_v, 15.6,
        "the 4S answer, not the stale 16S one"
    );
    assert_eq!(reading.info.cell_count, 4);
    // The drop is said once, with its count; the 0x04 request found nothing stale.
    let stale = "dropped 2 stale notification(s) before 0x03";
    assert_eq!(capture::count(log::Level::Debug, stale), 1);
    assert_eq!(capture::count(log::Level::Debug, "stale"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cell_count_that_0x04_contradicts_is_a_debug_line_and_0x04_wins() {
    let mut bms = FakeBms::default()
        .answers(Register::BasicInfo, notifications(&hex(STALE_16S_INFO)))
        .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)))
        .answers(Register::BasicInfo, notifications(&hex(REAL_4S_INFO)))
        .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)));
    let mut session = JbdSession {
        model: Some(None),
        ..JbdSession::new()
    };
    let said = "0x03 says 16 cells, 0x04 carries 4";
    capture::start();
    let (reading, _) = poll_jbd(&mut bms, &mut session, TIMEOUT).await.unwrap();
    assert_eq!(reading.cells.volts.len(), 4);
    assert_eq!(capture::count(log::Level::Debug, said), 1);
    // Counts that agree say nothing.
    capture::start();
    poll_jbd(&mut bms, &mut session, TIMEOUT).await.unwrap();
    assert_eq!(capture::count(log::Level::Debug, "0x04 carries"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_asked_register_frame_then_the_valid_one_in_the_same_notification() {
    let mut both = corrupt(REAL_4S_CELLS);
    both.extend(hex(REAL_4S_CELLS));
    let mut bms = FakeBms::default().answers(Register::CellVoltages, vec![both]);
    let mut session = JbdSession::new();
    let frame = request(&mut bms, &mut session, Register::CellVoltages, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(frame, jbd::parse_frame(&hex(REAL_4S_CELLS)).unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_asked_register_frame_then_the_valid_one_in_a_later_notification() {
    let mut sent = notifications(&corrupt(REAL_4S_INFO));
    sent.extend(notifications(&hex(REAL_4S_INFO)));
    let mut bms = FakeBms::default().answers(Register::BasicInfo, sent);
    let mut session = JbdSession::new();
    let frame = request(&mut bms, &mut session, Register::BasicInfo, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(frame, jbd::parse_frame(&hex(REAL_4S_INFO)).unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_truncated_frame_before_the_reply_costs_nothing() {
    // The first notification of a 0x03 reply, cut off, then the 0x04 reply that was asked.
    let mut sent = vec![hex(REAL_4S_INFO)[..20].to_vec()];
    sent.extend(notifications(&hex(REAL_4S_CELLS)));
    let mut bms = FakeBms::default().answers(Register::CellVoltages, sent);
    let mut session = JbdSession::new();
    let frame = request(&mut bms, &mut session, Register::CellVoltages, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(frame.register, 4);
}

#[tokio::test(start_paused = true)]
async fn only_corrupt_replies_fail_at_the_deadline_naming_the_fault() {
    let mut bms =
        FakeBms::default().answers(Register::BasicInfo, notifications(&corrupt(REAL_4S_INFO)));
    let mut session = JbdSession::new();
    let start = tokio::time::Instant::now();
    let err = request(&mut bms, &mut session, Register::BasicInfo, TIMEOUT)
        .await
        .unwrap_err();
    // Waited for a valid reply until the deadline, then said what was wrong.
    assert_eq!(start.elapsed(), TIMEOUT);
    assert!(
        matches!(&err, PollError::Decode(e) if e.get::<JbdError>().is_some()),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("checksum mismatch in 0x03"),
        "{err}"
    );
    // The BMS answers: this is not a miss that calls for a reconnect.
    assert!(!err.is_timeout());
}

#[tokio::test(start_paused = true)]
async fn a_reply_to_another_register_is_skipped() {
    let mut sent = notifications(&hex(REAL_4S_CELLS));
    sent.extend(notifications(&hex(REAL_4S_INFO)));
    let mut bms = FakeBms::default().answers(Register::BasicInfo, sent);
    let mut session = JbdSession::new();
    let frame = request(&mut bms, &mut session, Register::BasicInfo, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(frame.register, 3);
}

/// Characteristics as service discovery lists them: `(uuid, service, without response)`.
fn found(list: &[(Uuid, Uuid, bool)]) -> Vec<CharInfo> {
    list.iter()
        .map(|&(uuid, service, without)| CharInfo {
            uuid,
            service,
            write_without_response: without,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_bms_with_only_fff1_and_fff2_is_subscribed_and_written_there() {
    let mut bms = named_bms()
        .answers(Register::BasicInfo, notifications(&hex(REAL_4S_INFO)))
        .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)));
    bms.notifies_on = jbd::ALT_NOTIFY_UUID;
    let mut session = JbdSession::new();
    let chars = found(&[
        (jbd::ALT_NOTIFY_UUID, jbd::ALT_SERVICE_UUID, false),
        (jbd::ALT_WRITE_UUID, jbd::ALT_SERVICE_UUID, false),
    ]);
    session.start(&mut bms, &chars).await.unwrap();
    assert_eq!(bms.subscribed, [jbd::ALT_NOTIFY_UUID]);
    poll_jbd(&mut bms, &mut session, TIMEOUT).await.unwrap();
    // This dongle lists only "write": every request waits for the response.
    assert_eq!(
        bms.writes_to,
        [(jbd::ALT_WRITE_UUID, WriteMode::WithResponse); 3]
    );
}

#[tokio::test(start_paused = true)]
async fn ff01_and_ff02_win_over_fff1_and_fff2_and_write_without_response_when_offered() {
    let mut bms = FakeBms::default();
    let mut session = JbdSession::new();
    let chars = found(&[
        (jbd::ALT_NOTIFY_UUID, jbd::ALT_SERVICE_UUID, false),
        (jbd::ALT_WRITE_UUID, jbd::ALT_SERVICE_UUID, true),
        (jbd::NOTIFY_UUID, jbd::SERVICE_UUID, false),
        (jbd::WRITE_UUID, jbd::SERVICE_UUID, true),
    ]);
    session.start(&mut bms, &chars).await.unwrap();
    assert_eq!(bms.subscribed, [jbd::NOTIFY_UUID]);
    assert_eq!(
        (session.write, session.write_mode),
        (jbd::WRITE_UUID, WriteMode::WithoutResponse)
    );
}

#[tokio::test(start_paused = true)]
async fn a_device_without_a_whole_jbd_pair_is_not_a_jbd() {
    let mut bms = FakeBms::default();
    // ff01 without ff02, fff2 without fff1: no pair.
    let chars = found(&[
        (jbd::NOTIFY_UUID, jbd::SERVICE_UUID, false),
        (jbd::ALT_WRITE_UUID, jbd::ALT_SERVICE_UUID, true),
    ]);
    let err = JbdSession::new().start(&mut bms, &chars).await.unwrap_err();
    assert!(matches!(err, LinkError::MissingCharacteristic(_)), "{err}");
    assert!(bms.subscribed.is_empty(), "nothing subscribed");
}

#[tokio::test(start_paused = true)]
async fn notifications_of_another_characteristic_are_not_replies() {
    let mut bms = named_bms()
        .answers(Register::BasicInfo, notifications(&hex(REAL_4S_INFO)))
        .answers(Register::CellVoltages, notifications(&hex(REAL_4S_CELLS)));
    bms.notifies_on = jbd::ALT_NOTIFY_UUID;
    let err = poll_jbd(&mut bms, &mut JbdSession::new(), TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PollError::NoReply {
                request: "register 0x03",
                ..
            }
        ),
        "{err:?}"
    );
}
