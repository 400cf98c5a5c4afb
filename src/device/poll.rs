//! One poll of one device over a [`Link`]: request, reassemble, verify, decode.

use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::{Link, LinkError};
use crate::protocol::jbd::{
    self, BasicInfo, CellVoltages, Frame, JbdError, JbdReading, Reassembler, Register,
};
use crate::protocol::powermon::{PowermonError, PowermonReading};
use crate::reading::now_ns;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("no reply to register 0x{register:02X} within {after:?}")]
    NoReply { register: u8, after: Duration },
    #[error(transparent)]
    Jbd(#[from] JbdError),
    #[error(transparent)]
    Powermon(#[from] PowermonError),
}

impl PollError {
    /// True when the link should be torn down and re-established.
    pub fn is_link_fatal(&self) -> bool {
        matches!(self, PollError::Link(e) if e.is_fatal())
    }

    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            PollError::NoReply { .. } | PollError::Link(LinkError::Timeout { .. })
        )
    }
}

/// Per-connection JBD state.
#[derive(Debug, Default)]
pub struct JbdSession {
    reassembler: Reassembler,
    /// Register 0x05 is asked once per connection; `Some(None)` = asked, BMS has no name.
    pub model: Option<Option<String>>,
}

impl JbdSession {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Writes one read request and waits for a valid frame answering THAT register: stale replies
/// to other registers and broken frames are skipped (logged at debug) until the deadline.
async fn request<L: Link>(
    link: &mut L,
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
    link.write(&jbd::read_request(register)).await?;
    let deadline = Instant::now() + timeout;
    // The last broken frame seen: at the deadline, "checksum mismatch" says more than "no reply".
    let mut broken: Option<JbdError> = None;
    loop {
        let chunk = match timeout_at(deadline, link.notification()).await {
            Ok(chunk) => chunk?,
            Err(_) => {
                return Err(match broken {
                    Some(e) => PollError::Jbd(e),
                    None => PollError::NoReply {
                        register: register.code(),
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
pub async fn poll_jbd<L: Link>(
    link: &mut L,
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
    let info = BasicInfo::parse(&request(link, session, Register::BasicInfo, timeout).await?)?;
    let cells =
        CellVoltages::parse(&request(link, session, Register::CellVoltages, timeout).await?)?;
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

/// Polls a PowerMon: one GATT read.
pub async fn poll_powermon<L: Link>(
    link: &mut L,
    timeout: Duration,
) -> Result<(PowermonReading, i64), PollError> {
    let value = match tokio::time::timeout(timeout, link.read()).await {
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
    Ok((PowermonReading::parse(&value)?, time_ns))
}

#[cfg(test)]
mod tests;
