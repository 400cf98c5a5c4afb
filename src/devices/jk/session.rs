//! A JK BMS over any transport: subscribe to `ffe1`, ask for the device info (it picks the
//! cell layout), ask for cell info; the BMS then streams cell info records by itself. Each poll
//! takes the newest complete record that arrived since the last one, and asks again when the
//! stream stopped.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::time::{Instant, timeout_at};

use super::JkReading;
use super::protocol::{self as jk, CellInfo, DeviceInfo, JkError, Layout, Reassembler, Record};
use crate::devices::{PollError, Polled, Session, polled};
use crate::reading::now_ns;
use crate::transport::{CharInfo, Gatt, LinkError, WriteMode};

/// Per-connection JK state.
#[derive(Debug)]
pub struct JkSession {
    reassembler: Reassembler,
    write_mode: WriteMode,
    layout: Layout,
    model: Option<String>,
    /// Bound on the device info answer at connect.
    timeout: Duration,
}

impl JkSession {
    pub fn new(timeout: Duration) -> Self {
        JkSession {
            reassembler: Reassembler::new(),
            write_mode: WriteMode::WithoutResponse,
            layout: Layout::Cells32,
            model: None,
            timeout,
        }
    }

    /// Finds `ffe1`, subscribes, and reads the device info (model, layout); then starts the
    /// cell info stream.
    pub async fn start(
        &mut self,
        link: &mut dyn Gatt,
        found: &[CharInfo],
    ) -> Result<(), PollError> {
        let c = found
            .iter()
            .find(|c| c.uuid == jk::CHAR_UUID)
            .ok_or(LinkError::MissingCharacteristic("JK ffe1"))?;
        self.write_mode = WriteMode::for_characteristic(c);
        link.subscribe(jk::CHAR_UUID).await?;
        let deadline = Instant::now() + self.timeout;
        let info = self
            .ask(link, jk::CMD_DEVICE_INFO, jk::RECORD_DEVICE_INFO, deadline)
            .await?
            .ok_or(PollError::NoReply {
                request: "device info (0x97)",
                after: self.timeout,
            })?;
        let info = DeviceInfo::parse(&info).map_err(PollError::decode)?;
        log::debug!(
            "JK {} hardware {} software {}: {:?} layout",
            info.model,
            info.hardware_version,
            info.software_version,
            info.layout
        );
        self.layout = info.layout;
        self.model = Some(info.model).filter(|m| !m.is_empty());
        link.write(
            jk::CHAR_UUID,
            &jk::command(jk::CMD_CELL_INFO),
            self.write_mode,
        )
        .await?;
        Ok(())
    }

    /// Feeds a notification; keeps the newest record of `kind`.
    fn feed(
        &mut self,
        chunk: &[u8],
        kind: u8,
        newest: &mut Option<Record>,
        broken: &mut Option<JkError>,
    ) {
        for item in self.reassembler.push(chunk) {
            match item {
                Ok(r) if r.kind() == kind => *newest = Some(r),
                Ok(r) => log::debug!("JK record 0x{:02X} skipped", r.kind()),
                Err(e) => {
                    log::debug!("JK record skipped: {e}");
                    *broken = Some(e);
                }
            }
        }
    }

    /// Takes what is queued; when no record of `kind` is there, writes `cmd` and waits for one
    /// until `deadline`.
    async fn ask(
        &mut self,
        link: &mut dyn Gatt,
        cmd: u8,
        kind: u8,
        deadline: Instant,
    ) -> Result<Option<Record>, PollError> {
        let mut newest = None;
        let mut broken = None;
        // What streamed in since the last poll: polled once each, without waiting (a timer
        // at "now" would wait for the timer's next millisecond tick).
        while let Some(n) = link.notification().now_or_never() {
            let n = n?;
            if n.characteristic == jk::CHAR_UUID {
                self.feed(&n.value, kind, &mut newest, &mut broken);
            }
        }
        if newest.is_some() {
            return Ok(newest);
        }
        link.write(jk::CHAR_UUID, &jk::command(cmd), self.write_mode)
            .await?;
        while newest.is_none() {
            let Ok(n) = timeout_at(deadline, link.notification()).await else {
                return match broken {
                    Some(e) => Err(PollError::decode(e)),
                    None => Ok(None),
                };
            };
            let n = n?;
            if n.characteristic == jk::CHAR_UUID {
                self.feed(&n.value, kind, &mut newest, &mut broken);
            }
        }
        Ok(newest)
    }

    async fn poll_jk(
        &mut self,
        link: &mut dyn Gatt,
        timeout: Duration,
    ) -> Result<(JkReading, i64), PollError> {
        let deadline = Instant::now() + timeout;
        let record = self
            .ask(link, jk::CMD_CELL_INFO, jk::RECORD_CELL_INFO, deadline)
            .await?
            .ok_or(PollError::NoReply {
                request: "cell info (0x96)",
                after: timeout,
            })?;
        let time_ns = now_ns();
        let info = CellInfo::parse(&record, self.layout).map_err(PollError::decode)?;
        Ok((
            JkReading {
                info,
                model: self.model.clone(),
            },
            time_ns,
        ))
    }
}

impl Session for JkSession {
    fn open<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        found: &'a [CharInfo],
    ) -> BoxFuture<'a, Result<(), PollError>> {
        Box::pin(self.start(link, found))
    }

    fn poll<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Polled, PollError>> {
        Box::pin(async move { polled(self.poll_jk(link, timeout).await) })
    }
}

#[cfg(test)]
mod tests;
