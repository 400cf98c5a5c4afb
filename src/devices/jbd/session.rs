//! A JBD BMS over any transport: subscribe to its notify characteristic, run the `FF AA`
//! password handshake when a password is configured, write a read request per register,
//! reassemble the notifications into the reply frame, verify, decode.
//!
//! A BMS whose firmware requires BLE pairing echoes every written frame back instead of
//! answering; that echo is reported as [`PollError::PairingRequired`], whichever frame it was.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use super::auth::{self, AuthError, Command, Password};
use super::protocol::{
    self as jbd, BasicInfo, CellVoltages, Frame, JbdError, JbdReading, Reassembler, Register,
};
use crate::device::DeviceSpec;
use crate::devices::{PollError, Polled, Session, polled};
use crate::reading::now_ns;
use crate::transport::{CharInfo, Gatt, LinkError, WriteMode};

/// The characteristic pairs a JBD BMS offers, (notify, write), in the order they are tried:
/// ff01/ff02 under service ff00 on most dongles, fff1/fff2 under fff0 on some.
const CHARACTERISTIC_PAIRS: [(Uuid, Uuid); 2] = [
    (jbd::NOTIFY_UUID, jbd::WRITE_UUID),
    (jbd::ALT_NOTIFY_UUID, jbd::ALT_WRITE_UUID),
];

/// What the password handshake needs: the BMS's address (the encryption's key) and password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub mac: [u8; 6],
    pub password: Password,
}

/// Per-connection JBD state.
#[derive(Debug)]
pub struct JbdSession {
    /// Run the `FF AA` handshake after subscribing (a password is configured).
    credentials: Option<Credentials>,
    /// Bound on each handshake answer (the device's reply timeout).
    timeout: Duration,
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
            credentials: None,
            timeout: crate::config::DEFAULT_TIMEOUT,
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

    /// The session for a configured device: with its password, the handshake runs on every
    /// connection. (Config has checked the password and the address with the same functions.)
    pub fn for_device(spec: &DeviceSpec) -> Self {
        let credentials = spec.password.as_ref().and_then(|p| {
            Some(Credentials {
                mac: auth::mac_bytes(&spec.address)?,
                password: Password::parse(p.expose()).ok()?,
            })
        });
        JbdSession {
            credentials,
            timeout: spec.timeout,
            ..Self::default()
        }
    }

    /// With a password to send on every connection.
    pub fn with_credentials(mut self, credentials: Credentials, timeout: Duration) -> Self {
        self.credentials = Some(credentials);
        self.timeout = timeout;
        self
    }

    /// Picks the first characteristic pair the device has, and how to write to it (older
    /// dongles list "write", current ones "write-without-response"), subscribes, and
    /// authenticates when a password is configured.
    pub async fn start(
        &mut self,
        link: &mut dyn Gatt,
        found: &[CharInfo],
    ) -> Result<(), PollError> {
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
        link.subscribe(self.notify).await?;
        if let Some(credentials) = self.credentials.clone() {
            self.authenticate(link, &credentials).await?;
        }
        Ok(())
    }

    /// The `FF AA` handshake: app key (0x15), random byte (0x17), user password (0x18), random
    /// byte, root password (0x1D); each answer bounded by the timeout. Nothing in it changes
    /// the BMS: 0x16 (change password) is not even encodable.
    async fn authenticate(
        &mut self,
        link: &mut dyn Gatt,
        credentials: &Credentials,
    ) -> Result<(), PollError> {
        match self
            .exchange(link, &auth::app_key_frame(), Command::AppKey)
            .await?
        {
            None => {
                log::debug!(
                    "no answer to the app key (FF AA 15): this dongle asks for no password; polling without"
                );
                return Ok(());
            }
            Some(auth::NO_PASSWORD) => {
                log::debug!("the dongle has no password set; polling without");
                return Ok(());
            }
            Some(auth::ACK) => {}
            Some(other) => return Err(PollError::decode(AuthError::AppKeyRefused(other))),
        }
        let random = self.random(link).await?;
        let frame = auth::user_password_frame(credentials.mac, random, &credentials.password);
        match self.exchange(link, &frame, Command::UserPassword).await? {
            Some(auth::ACK) => {}
            Some(_) => return Err(PollError::decode(AuthError::WrongPassword)),
            None => {
                return Err(PollError::NoReply {
                    request: "the password (FF AA 18)",
                    after: self.timeout,
                });
            }
        }
        // A fresh random byte for the root password, as esphome-jbd-bms does (the app re-uses
        // the first; the captures show both accepted).
        let random = self.random(link).await?;
        let frame = auth::root_password_frame(credentials.mac, random);
        match self.exchange(link, &frame, Command::RootPassword).await? {
            Some(auth::ACK) => log::debug!("password accepted"),
            // Captures show dongles answering after the user password alone: poll anyway.
            other => log::debug!(
                "the root password got {other:?}, not an ACK; polling anyway (the user password was accepted)"
            ),
        }
        Ok(())
    }

    /// Asks for the random byte the next password is encrypted with.
    async fn random(&mut self, link: &mut dyn Gatt) -> Result<u8, PollError> {
        self.exchange(link, &auth::random_request(), Command::Random)
            .await?
            .ok_or(PollError::NoReply {
                request: "the random byte (FF AA 17)",
                after: self.timeout,
            })
    }

    /// Writes one handshake frame and waits for its answer's value: `None` when none came
    /// within the timeout. Other notifications are skipped; an echo of the frame means the BMS
    /// wants pairing. (Nothing here logs the frames: they carry the password.)
    async fn exchange(
        &mut self,
        link: &mut dyn Gatt,
        frame: &[u8],
        command: Command,
    ) -> Result<Option<u8>, PollError> {
        link.drain();
        link.write(self.write, frame, self.write_mode).await?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let Ok(n) = timeout_at(deadline, link.notification()).await else {
                return Ok(None);
            };
            let n = n?;
            if n.characteristic != self.notify {
                continue;
            }
            if n.value == frame {
                return Err(PollError::PairingRequired);
            }
            match auth::parse_answer(&n.value) {
                Some(a) if a.command == command.code() => return Ok(Some(a.value)),
                _ => log::debug!(
                    "skipped a notification that is no answer to FF AA {:02X}",
                    command.code()
                ),
            }
        }
    }
}

impl Session for JbdSession {
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
    let written = jbd::read_request(register);
    link.write(session.write, &written, session.write_mode)
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
                if n.value == written {
                    return Err(PollError::PairingRequired);
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
            Err(e @ PollError::PairingRequired) => return Err(e),
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
