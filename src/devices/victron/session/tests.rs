//! The passive session over a fake transport, on a paused clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::devices::victron::protocol::{RECORD_BATTERY_MONITOR, seal};
use crate::transport::{LinkError, Transport};

const KEY: &str = "aff4d0995b7d1e176c0c33ecb9e70dcd";
const PLAIN: [u8; 15] = [
    0xff, 0xff, 0xe5, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0xf4, 0x01, 0x40, 0xdf,
];
const T: Duration = Duration::from_secs(5);

fn key() -> Key {
    Key::parse(KEY).unwrap()
}

/// Adverts "heard" by the fake radio, and how often the session listened.
#[derive(Default)]
struct Radio {
    heard: VecDeque<Advert>,
    listens: Vec<u16>,
    /// Listening fails (e.g. a scan BlueZ refuses).
    deaf: bool,
}

impl Radio {
    fn hear(&mut self, nonce: u16, key: &Key) {
        self.heard.push_back(Advert {
            data: seal(0xA389, RECORD_BATTERY_MONITOR, nonce, key, &PLAIN),
            heard: Instant::now(),
        });
    }
}

impl Transport for Radio {
    async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
        panic!("a passive session never connects")
    }
    async fn disconnect(&mut self) -> bool {
        true
    }
    async fn subscribe(&mut self, _: uuid::Uuid) -> Result<(), LinkError> {
        panic!("a passive session subscribes nothing")
    }
    async fn write(
        &mut self,
        _: uuid::Uuid,
        _: &[u8],
        _: crate::transport::WriteMode,
    ) -> Result<(), LinkError> {
        panic!("a passive session writes nothing")
    }
    async fn notification(&mut self) -> Result<crate::transport::Notification, LinkError> {
        std::future::pending().await
    }
    fn drain(&mut self) -> usize {
        0
    }
    async fn read(&mut self, _: uuid::Uuid) -> Result<Vec<u8>, LinkError> {
        panic!("a passive session reads nothing")
    }
    async fn lost(&mut self) {
        std::future::pending().await
    }
    async fn listen(&mut self, company: u16) -> Result<(), LinkError> {
        if self.deaf {
            return Err(LinkError::NotFound);
        }
        self.listens.push(company);
        Ok(())
    }
    /// The newest of what was heard since the last call; nothing: waits for ever.
    async fn advertisement(&mut self) -> Result<Advert, LinkError> {
        match self.heard.drain(..).next_back() {
            Some(a) => Ok(a),
            None => std::future::pending().await,
        }
    }
}

async fn opened(radio: &mut Radio, key: Option<Key>) -> VictronSession {
    let mut s = VictronSession::new(key);
    s.open(radio, &[]).await.unwrap();
    assert_eq!(radio.listens, [victron::COMPANY_ID]);
    s
}

/// The SmartShunt vector's reading; returns its time.
fn checked(p: &Polled) -> i64 {
    let r = p.0.as_any().downcast_ref::<VictronReading>().unwrap();
    assert_eq!(r.product_id, 0xA389);
    let crate::devices::victron::protocol::Record::BatteryMonitor(m) = &r.record else {
        panic!("a battery monitor")
    };
    assert_eq!(m.voltage_v, Some(12.53));
    p.1
}

#[tokio::test(start_paused = true)]
async fn the_first_poll_waits_for_an_advertisement_within_the_timeout() {
    let mut radio = Radio::default();
    let mut s = opened(&mut radio, Some(key())).await;
    let started = Instant::now();
    assert_eq!(
        s.poll(&mut radio, T).await.map(drop),
        Err(PollError::Silent { after: T })
    );
    assert_eq!(started.elapsed(), T, "it waited the whole timeout");
    radio.hear(1, &key());
    let p = s.poll(&mut radio, T).await.unwrap();
    checked(&p);
}

#[tokio::test(start_paused = true)]
async fn each_poll_takes_the_newest_heard_since_the_last_and_nothing_new_is_quiet() {
    let mut radio = Radio::default();
    let mut s = opened(&mut radio, Some(key())).await;
    radio.hear(1, &key());
    s.poll(&mut radio, T).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    // Nothing since: no line, and no wait.
    let started = Instant::now();
    assert_eq!(
        s.poll(&mut radio, T).await.map(drop),
        Err(PollError::NothingNew)
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
    // Two heard: the newest is taken, with its own time.
    radio.hear(2, &key());
    tokio::time::advance(Duration::from_secs(3)).await;
    radio.hear(3, &key());
    tokio::time::advance(Duration::from_secs(2)).await;
    let time_ns = checked(&s.poll(&mut radio, T).await.unwrap());
    // Stamped when heard, 2 s (on the paused clock) before the poll; the wall clock barely
    // moved meanwhile.
    let age_ns = crate::reading::now_ns() - time_ns;
    assert!(
        (1_900_000_000..2_500_000_000).contains(&age_ns),
        "stamped when heard, not when polled: {age_ns} ns before now"
    );
    assert!(radio.heard.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_device_silent_past_the_stale_limit_is_silent_and_the_scan_is_made_sure_of() {
    let mut radio = Radio::default();
    let mut s = opened(&mut radio, Some(key())).await;
    radio.hear(1, &key());
    s.poll(&mut radio, T).await.unwrap();
    tokio::time::advance(STALE_AFTER - Duration::from_millis(1)).await;
    assert_eq!(
        s.poll(&mut radio, T).await.map(drop),
        Err(PollError::NothingNew)
    );
    assert_eq!(radio.listens.len(), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        s.poll(&mut radio, T).await.map(drop),
        Err(PollError::Silent { after: STALE_AFTER })
    );
    assert_eq!(radio.listens, [victron::COMPANY_ID; 2], "listened again");
    // Heard again: read again.
    radio.hear(2, &key());
    s.poll(&mut radio, T).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_advertisement_older_than_the_stale_limit_is_not_reported() {
    let mut radio = Radio::default();
    let mut s = opened(&mut radio, Some(key())).await;
    radio.hear(1, &key());
    tokio::time::advance(STALE_AFTER + Duration::from_millis(1)).await;
    assert_eq!(
        s.poll(&mut radio, T).await.map(drop),
        Err(PollError::Silent { after: STALE_AFTER })
    );
    radio.hear(2, &key());
    tokio::time::advance(STALE_AFTER).await;
    assert!(
        s.poll(&mut radio, T).await.is_ok(),
        "30 s old is still news"
    );
}

#[tokio::test(start_paused = true)]
async fn a_wrong_key_is_a_misconfiguration_and_garbage_a_decode_error() {
    let mut radio = Radio::default();
    let mut s = opened(&mut radio, Some(key())).await;
    let other = Key::parse("adeccb947395801a4dd45a2eaa44bf17").unwrap();
    radio.hear(1, &other);
    let err = s.poll(&mut radio, T).await.map(drop).unwrap_err();
    let PollError::Misconfigured(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        e.get::<VictronError>(),
        Some(&VictronError::WrongKey { sent: 0xAD })
    );
    radio.heard.push_back(Advert {
        data: vec![0x10, 0x02, 0x89],
        heard: Instant::now(),
    });
    let err = s.poll(&mut radio, T).await.map(drop).unwrap_err();
    assert!(
        matches!(&err, PollError::Decode(e) if e.get::<VictronError>() == Some(&VictronError::TooShort(3))),
        "{err:?}"
    );
    // No key at all (a configuration the config check refuses): misconfigured, not a panic.
    let mut s = VictronSession::new(None);
    radio.listens.clear();
    s.open(&mut radio, &[]).await.unwrap();
    radio.hear(1, &key());
    let err = s.poll(&mut radio, T).await.map(drop).unwrap_err();
    assert!(
        matches!(&err, PollError::Misconfigured(e) if e.get::<VictronError>() == Some(&VictronError::NoKey)),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_listen_fails_the_open() {
    let mut radio = Radio {
        deaf: true,
        ..Radio::default()
    };
    let mut s = VictronSession::new(Some(key()));
    assert_eq!(
        s.open(&mut radio, &[]).await,
        Err(PollError::Link(LinkError::NotFound))
    );
}
