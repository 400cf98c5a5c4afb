//! A Victron device over any transport, passively: listen to its advertisements (no
//! connection, ever), and at each poll decrypt and decode the newest one heard since the last
//! poll.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::VictronReading;
use super::protocol::{self as victron, Key, VictronError};
use crate::devices::{PollError, Polled, Session, polled};
use crate::reading::now_ns;
use crate::transport::{Advert, CharInfo, Gatt};

/// An advertisement older than this is not reported; a device not heard for this long is
/// silent (a warning, and the scan is made sure of).
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// What one device's listening has heard.
#[derive(Debug)]
pub struct VictronSession {
    /// `None` when the configuration has no (valid) key: every advertisement is refused.
    key: Option<Key>,
    /// When the newest advertisement taken was heard.
    heard: Option<tokio::time::Instant>,
}

impl VictronSession {
    pub fn new(key: Option<Key>) -> Self {
        VictronSession { key, heard: None }
    }

    /// The newest advertisement heard since the last poll. The first time, waits for one
    /// (bounded by `timeout`); later, takes what came: nothing new is [`PollError::NothingNew`]
    /// while the last one is recent, and [`PollError::Silent`] once it is stale (then the scan
    /// is made sure of: BlueZ may have ended it).
    async fn newest(
        &mut self,
        link: &mut dyn Gatt,
        timeout: Duration,
    ) -> Result<Advert, PollError> {
        let Some(last) = self.heard else {
            return match tokio::time::timeout(timeout, link.advertisement()).await {
                Ok(advert) => Ok(advert?),
                Err(_) => Err(PollError::Silent { after: timeout }),
            };
        };
        match link.advertisement().now_or_never() {
            Some(advert) => Ok(advert?),
            None if last.elapsed() < STALE_AFTER => Err(PollError::NothingNew),
            None => {
                link.listen(victron::COMPANY_ID).await?;
                Err(PollError::Silent { after: STALE_AFTER })
            }
        }
    }

    async fn poll_once(
        &mut self,
        link: &mut dyn Gatt,
        timeout: Duration,
    ) -> Result<(VictronReading, i64), PollError> {
        let advert = self.newest(link, timeout).await?;
        self.heard = Some(advert.heard);
        let age = advert.heard.elapsed();
        // Polls further apart than this: the newest one heard may be old news.
        if age > STALE_AFTER {
            return Err(PollError::Silent { after: STALE_AFTER });
        }
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| PollError::misconfigured(VictronError::NoKey))?;
        let reading = VictronReading::decode(&advert.data, key).map_err(|e| match e {
            VictronError::WrongKey { .. } => PollError::misconfigured(e),
            e => PollError::decode(e),
        })?;
        let age_ns = i64::try_from(age.as_nanos()).unwrap_or(0);
        Ok((reading, now_ns() - age_ns))
    }
}

impl Session for VictronSession {
    fn open<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        _found: &'a [CharInfo],
    ) -> BoxFuture<'a, Result<(), PollError>> {
        Box::pin(async move {
            self.heard = None;
            link.listen(victron::COMPANY_ID).await?;
            Ok(())
        })
    }

    fn poll<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Polled, PollError>> {
        Box::pin(async move { polled(self.poll_once(link, timeout).await) })
    }
}

#[cfg(test)]
mod tests;
