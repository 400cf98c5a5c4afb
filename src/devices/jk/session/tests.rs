//! The JK session over a scripted fake BMS on a paused clock: the stream is taken from the
//! queue, a silent stream is asked again, a BMS that never answers is a miss.

use std::collections::VecDeque;

use super::*;
use crate::devices::jk::protocol::tests::CELL_INFO_32S;
use crate::devices::jk::{EXAMPLE_CELL_INFO_24S, EXAMPLE_DEVICE_INFO_24S};
use crate::devices::protocol::parse_hex;
use crate::transport::{Notification, Transport};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct FakeJk {
    queue: VecDeque<Vec<u8>>,
    /// What each command brings, in turn (none left: silence).
    answers: Vec<(u8, VecDeque<Vec<u8>>)>,
    written: Vec<u8>,
}

fn notifications(hex: &str) -> Vec<Vec<u8>> {
    parse_hex(hex)
        .unwrap()
        .chunks(128)
        .map(<[u8]>::to_vec)
        .collect()
}

impl FakeJk {
    fn on(mut self, cmd: u8, hex: &str) -> Self {
        match self.answers.iter_mut().find(|(c, _)| *c == cmd) {
            Some((_, q)) => q.extend(notifications(hex)),
            None => self.answers.push((cmd, notifications(hex).into())),
        }
        self
    }
}

impl Transport for FakeJk {
    async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
        unreachable!()
    }

    async fn disconnect(&mut self) -> bool {
        true
    }

    async fn subscribe(&mut self, c: uuid::Uuid) -> Result<(), LinkError> {
        assert_eq!(c, jk::CHAR_UUID);
        Ok(())
    }

    async fn write(&mut self, _: uuid::Uuid, data: &[u8], _: WriteMode) -> Result<(), LinkError> {
        let cmd = data[4];
        assert_eq!(data, jk::command(cmd));
        self.written.push(cmd);
        if let Some((_, q)) = self.answers.iter_mut().find(|(c, _)| *c == cmd) {
            // One record's worth per command.
            let n = q.len().min(3);
            self.queue.extend(q.drain(..n));
        }
        Ok(())
    }

    async fn notification(&mut self) -> Result<Notification, LinkError> {
        match self.queue.pop_front() {
            Some(value) => Ok(Notification {
                characteristic: jk::CHAR_UUID,
                value,
            }),
            None => std::future::pending().await,
        }
    }

    fn drain(&mut self) -> usize {
        std::mem::take(&mut self.queue).len()
    }

    async fn read(&mut self, _: uuid::Uuid) -> Result<Vec<u8>, LinkError> {
        unreachable!()
    }

    async fn lost(&mut self) {
        std::future::pending().await
    }
}

fn ffe1() -> Vec<CharInfo> {
    vec![CharInfo {
        uuid: jk::CHAR_UUID,
        service: jk::SERVICE_UUID,
        write_without_response: true,
    }]
}

#[tokio::test(start_paused = true)]
async fn device_info_picks_the_layout_then_the_stream_is_read_from_the_queue() {
    let mut bms = FakeJk::default()
        .on(jk::CMD_DEVICE_INFO, EXAMPLE_DEVICE_INFO_24S)
        .on(jk::CMD_CELL_INFO, EXAMPLE_CELL_INFO_24S);
    let mut s = JkSession::new(TIMEOUT);
    s.start(&mut bms, &ffe1()).await.unwrap();
    assert_eq!(s.layout, Layout::Cells24);
    assert_eq!(s.model.as_deref(), Some("JK-B2A20S20P"));
    assert_eq!(bms.written, [jk::CMD_DEVICE_INFO, jk::CMD_CELL_INFO]);
    // The stream: the record is already queued; the poll takes it without asking.
    let (r, _) = s.poll_jk(&mut bms, TIMEOUT).await.unwrap();
    assert_eq!(r.info.cells_v.len(), 16);
    assert_eq!(bms.written.len(), 2, "nothing asked: the stream was there");
}

#[tokio::test(start_paused = true)]
async fn the_newest_streamed_record_wins_and_a_silent_stream_is_asked_again() {
    let mut bms = FakeJk::default().on(
        jk::CMD_DEVICE_INFO,
        crate::devices::jk::protocol::tests::DEVICE_INFO_32S,
    );
    let mut s = JkSession::new(TIMEOUT);
    s.start(&mut bms, &ffe1()).await.unwrap();
    // Two records streamed since the last poll: the second (v15, 16 cells) is reported.
    bms.queue.extend(notifications(CELL_INFO_32S));
    bms.queue.extend(notifications(
        crate::devices::jk::protocol::tests::CELL_INFO_32S_V15,
    ));
    let (r, _) = s.poll_jk(&mut bms, TIMEOUT).await.unwrap();
    assert_eq!(r.info.cells_v.len(), 16);
    // Nothing streamed since: asked again, answered.
    bms = bms.on(jk::CMD_CELL_INFO, CELL_INFO_32S);
    let (r, _) = s.poll_jk(&mut bms, TIMEOUT).await.unwrap();
    assert_eq!(r.info.cells_v.len(), 8);
    assert_eq!(
        bms.written,
        [jk::CMD_DEVICE_INFO, jk::CMD_CELL_INFO, jk::CMD_CELL_INFO]
    );
    // And silence: a miss after the timeout.
    let started = Instant::now();
    let err = s.poll_jk(&mut bms, TIMEOUT).await.unwrap_err();
    assert!(matches!(err, PollError::NoReply { .. }), "{err:?}");
    assert_eq!(started.elapsed(), TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn no_device_info_or_no_ffe1_fails_the_connect() {
    let mut bms = FakeJk::default();
    let err = JkSession::new(TIMEOUT)
        .start(&mut bms, &ffe1())
        .await
        .unwrap_err();
    assert!(matches!(err, PollError::NoReply { request, .. } if request.contains("0x97")));
    let err = JkSession::new(TIMEOUT)
        .start(&mut bms, &[])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        PollError::Link(LinkError::MissingCharacteristic(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_broken_record_and_nothing_else_is_a_decode_error() {
    let mut bms = FakeJk::default().on(jk::CMD_DEVICE_INFO, EXAMPLE_DEVICE_INFO_24S);
    let mut s = JkSession::new(TIMEOUT);
    s.start(&mut bms, &ffe1()).await.unwrap();
    let mut broken = parse_hex(EXAMPLE_CELL_INFO_24S).unwrap();
    broken[200] ^= 1;
    bms.answers.push((jk::CMD_CELL_INFO, vec![broken].into()));
    let err = s.poll_jk(&mut bms, TIMEOUT).await.unwrap_err();
    let PollError::Decode(e) = &err else {
        panic!("{err:?}")
    };
    assert!(matches!(e.get::<JkError>(), Some(JkError::Checksum { .. })));
}
