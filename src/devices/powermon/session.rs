//! A PowerMon over any transport: one GATT read of its record characteristic per poll.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

use super::protocol::{self, PowermonReading};
use crate::devices::{PollError, Polled, Session};
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
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(async move { self.start(found) })
    }

    fn poll<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Polled, PollError>> {
        Box::pin(async move {
            let (reading, time_ns) = self.read(link, timeout).await?;
            Ok((Arc::new(reading) as _, time_ns))
        })
    }
}
