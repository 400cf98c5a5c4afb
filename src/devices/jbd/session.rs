//! A JBD BMS over any transport: subscribe to its notify characteristic, write a read request
//! per register, reassemble the notifications into the reply frame, verify, decode.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use super::protocol::{
    self as jbd, BasicInfo, CellVoltages, Frame, JbdError, JbdReading, Reassembler, Register,
};
use crate::devices::{PollError, Polled, Session, polled};
use crate::reading::now_ns;
use crate::transport::{CharInfo, Gatt, LinkError, WriteMode};

/// The characteristic pairs a JBD BMS offers, (notify, write), in the order they are tried:
/// ff01/ff02 under service ff00 on most dongles, fff1/fff2 under fff0 on some.
const CHARACTERISTIC_PAIRS: [(Uuid, Uuid); 2] = [
    (jbd::NOTIFY_UUID, jbd::WRITE_UUID),
    (jbd::ALT_NOTIFY_UUID, jbd::ALT_WRITE_UUID),
];

/// Per-connection JBD state.
#[derive(Debug)]
pub struct JbdSession {
    reassembler: Reassembler,
    /// Register 0x05 is asked once per connection; `Some(None)` = asked, BMS has no name.
    pub model: Option<Option<String>>,
    /// Replies arrive here.
    notify: Uuid,
    /// Requests go here, this way.
    write: Uuid,
    write_mode: WriteMode,
}

impl Default for JbdSession {
    /// Before `open` picks the device's pair: ff01/ff02, written without response.
    fn default() -> Self {
        JbdSession {
            reassembler: Reassembler::new(),
            model: None,
            notify: jbd::NOTIFY_UUID,
            write: jbd::WRITE_UUID,
            write_mode: WriteMode::WithoutResponse,
        }
    }
}

impl JbdSession {
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks the first characteristic pair the device has, and how to write to it (older
    /// dongles list "write", current ones "write-without-response"), and subscribes.
    pub async fn start(
        &mut self,
        link: &mut dyn Gatt,
        found: &[CharInfo],
    ) -> Result<(), LinkError> {
        let find = |uuid: Uuid| found.iter().find(|c| c.uuid == uuid);
        let (notify, write) = CHARACTERISTIC_PAIRS
            .iter()
            .find_map(|&(n, w)| Some((find(n)?, find(w)?)))
            .ok_or(LinkError::MissingCharacteristic(
                "JBD ff01/ff02 (or fff1/fff2)",
            ))?;
        self.notify = notify.uuid;
        self.write = write.uuid;
        self.write_mode = WriteMode::for_characteristic(write);
        link.subscribe(self.notify).await
    }
}

impl Session for JbdSession {
    fn open<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        found: &'a [CharInfo],
    ) -> BoxFuture<'a, Result<(), LinkError>> {
        Box::pin(self.start(link, found))
    }

    fn poll<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Polled, PollError>> {
        Box::pin(async move { polled(poll_jbd(link, self, timeout).await) })
    }
}

/// Writes one read request and waits for a valid frame answering THAT register: stale replies
/// to other registers and broken frames are skipped (logged at debug) until the deadline.
async fn request(
    link: &mut dyn Gatt,
    session: &mut JbdSession,
    register: Register,
    timeout: Duration,
) -> Result<Frame, PollError> {
    let stale = link.drain();
    if stale > 0 {
        log::debug!(
            "dropped {stale} stale notification(s) before 0x{:02X}",
            register.code()
        );
    }
    session.reassembler.reset();
    link.write(
        session.write,
        &jbd::read_request(register),
        session.write_mode,
    )
    .await?;
    let deadline = Instant::now() + timeout;
    // The last broken frame seen: at the deadline, "checksum mismatch" says more than "no reply".
    let mut broken: Option<JbdError> = None;
    loop {
        let chunk = match timeout_at(deadline, link.notification()).await {
            Ok(n) => {
                let n = n?;
                if n.characteristic != session.notify {
                    continue;
                }
                n.value
            }
            Err(_) => {
                return Err(match broken {
                    Some(e) => PollError::decode(e),
                    None => PollError::NoReply {
                        request: register.request_name(),
                        after: timeout,
                    },
                });
            }
        };
        for item in session.reassembler.push(&chunk) {
            match item {
                Ok(frame) if frame.register == register.code() => return Ok(frame),
                Ok(frame) => log::debug!(
                    "ignored a stale 0x{:02X} reply while waiting for 0x{:02X}",
                    frame.register,
                    register.code()
                ),
                // A broken frame, even one claiming our register, is skipped: the valid reply
                // may follow it, in this chunk or a later one, until the deadline.
                Err(e) => {
                    log::debug!(
                        "skipped a broken frame while waiting for 0x{:02X}: {e}",
                        register.code()
                    );
                    broken = Some(e);
                }
            }
        }
    }
}

/// Polls a JBD BMS: 0x05 once per connection (a refusal is fine), then 0x03 and 0x04 in
/// sequence. Returns the reading and the time its last reply completed.
pub async fn poll_jbd(
    link: &mut dyn Gatt,
    session: &mut JbdSession,
    timeout: Duration,
) -> Result<(JbdReading, i64), PollError> {
    if session.model.is_none() {
        let name = match request(link, session, Register::DeviceName, timeout).await {
            Ok(frame) => jbd::parse_device_name(&frame)
                .ok()
                .filter(|n| !n.is_empty()),
            Err(e @ PollError::Link(_)) if e.is_link_fatal() => return Err(e),
            Err(e) => {
                log::debug!("no device name (register 0x05): {e}");
                None
            }
        };
        session.model = Some(name);
    }
    let info = BasicInfo::parse(&request(link, session, Register::BasicInfo, timeout).await?)
        .map_err(PollError::decode)?;
    let cells =
        CellVoltages::parse(&request(link, session, Register::CellVoltages, timeout).await?)
            .map_err(PollError::decode)?;
    let time_ns = now_ns();
    if usize::from(info.cell_count) != cells.volts.len() {
        log::debug!(
            "0x03 says {} cells, 0x04 carries {}; reporting what 0x04 carries",
            info.cell_count,
            cells.volts.len()
        );
    }
    Ok((
        JbdReading {
            info,
            cells,
            model: session.model.clone().flatten(),
        },
        time_ns,
    ))
}

#[cfg(test)]
mod tests;
