//! A PowerMon over any transport: one GATT read of its record characteristic per poll.

use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use super::protocol::{self, PowermonReading};
use crate::devices::{PollError, Polled, Session, polled};
use crate::reading::now_ns;
use crate::transport::{CharInfo, Gatt, LinkError};

/// The record characteristics, newest firmware first.
const RECORD_UUIDS: [Uuid; 2] = [protocol::NEW_RECORD_UUID, protocol::OLD_RECORD_UUID];

#[derive(Debug)]
pub struct PowermonSession {
    record: Uuid,
}

impl Default for PowermonSession {
    fn default() -> Self {
        PowermonSession {
            record: protocol::NEW_RECORD_UUID,
        }
    }
}

impl PowermonSession {
    /// Picks the record characteristic this firmware has.
    pub fn start(&mut self, found: &[CharInfo]) -> Result<(), LinkError> {
        self.record = RECORD_UUIDS
            .into_iter()
            .find(|u| found.iter().any(|c| c.uuid == *u))
            .ok_or(LinkError::MissingCharacteristic("PowerMon record"))?;
        Ok(())
    }

    /// One read, bounded by `timeout`; returns the reading and when the read completed.
    pub async fn read(
        &mut self,
        link: &mut dyn Gatt,
        timeout: Duration,
    ) -> Result<(PowermonReading, i64), PollError> {
        let value = match tokio::time::timeout(timeout, link.read(self.record)).await {
            Ok(v) => v?,
            Err(_) => {
                return Err(LinkError::Timeout {
                    what: "record read",
                    after: timeout,
                }
                .into());
            }
        };
        let time_ns = now_ns();
        Ok((
            PowermonReading::parse(&value).map_err(PollError::decode)?,
            time_ns,
        ))
    }
}

impl Session for PowermonSession {
    fn open<'a>(
        &'a mut self,
        _link: &'a mut dyn Gatt,
        found: &'a [CharInfo],
    ) -> BoxFuture<'a, Result<(), PollError>> {
        Box::pin(async move { Ok(self.start(found)?) })
    }

    fn poll<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Polled, PollError>> {
        Box::pin(async move { polled(self.read(link, timeout).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::powermon::demo::PowermonSim;
    use crate::transport::{Notification, Transport, WriteMode};

    /// A PowerMon that offers `record` and answers reads of it with the demo's record.
    struct Fake {
        record: Uuid,
        read_from: Vec<Uuid>,
    }

    impl Transport for Fake {
        async fn connect(&mut self) -> Result<Vec<CharInfo>, LinkError> {
            unreachable!("the session is handed a connected link")
        }
        async fn disconnect(&mut self) -> bool {
            true
        }
        async fn subscribe(&mut self, _: Uuid) -> Result<(), LinkError> {
            unreachable!("a PowerMon is read, never subscribed")
        }
        async fn write(&mut self, _: Uuid, _: &[u8], _: WriteMode) -> Result<(), LinkError> {
            unreachable!("blebatt never writes to a PowerMon")
        }
        async fn notification(&mut self) -> Result<Notification, LinkError> {
            std::future::pending().await
        }
        fn drain(&mut self) -> usize {
            0
        }
        async fn read(&mut self, from: Uuid) -> Result<Vec<u8>, LinkError> {
            self.read_from.push(from);
            if from != self.record {
                return Err(LinkError::MissingCharacteristic("requested"));
            }
            let sim = PowermonSim {
                voltage_v: 13.3,
                current_a: -3.0,
            };
            Ok(sim.record(1.7e9))
        }
        async fn lost(&mut self) {
            std::future::pending().await
        }
    }

    fn offering(uuids: &[Uuid]) -> Vec<CharInfo> {
        uuids
            .iter()
            .map(|&uuid| CharInfo {
                uuid,
                service: Uuid::nil(),
                write_without_response: false,
            })
            .collect()
    }

    #[tokio::test]
    async fn the_record_is_read_where_this_firmware_has_it() {
        for record in RECORD_UUIDS {
            let mut link = Fake {
                record,
                read_from: Vec::new(),
            };
            let mut session = PowermonSession::default();
            session.start(&offering(&[Uuid::nil(), record])).unwrap();
            let (reading, _) = session
                .read(&mut link, Duration::from_secs(5))
                .await
                .unwrap();
            assert!((13.0..13.5).contains(&reading.voltage1_v), "{reading:?}");
            assert_eq!(link.read_from, [record]);
        }
        let err = PowermonSession::default()
            .start(&offering(&[Uuid::nil()]))
            .unwrap_err();
        assert_eq!(err, LinkError::MissingCharacteristic("PowerMon record"));
    }
}
