//! The device task: owns one link, reconnects with backoff, answers polls one at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::poll::{JbdSession, PollError, poll_jbd, poll_powermon};
use super::{DeviceSpec, Link};
use crate::reading::{DeviceKind, Reading, Values};

/// First reconnect delay after a failed attempt, and the cap.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Consecutive reply timeouts after which the link is presumed dead and re-established.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 2;
/// How long shutdown waits for a device to disconnect.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A failed poll, naming the device and, where the cause is recognisable, what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error("{device} ({address}): {source}{hint}")]
    Poll {
        device: String,
        address: String,
        source: PollError,
        hint: &'static str,
    },
    #[error(
        "{device} ({address}) is not connected ({last_error}); retrying in the background{hint}"
    )]
    Down {
        device: String,
        address: String,
        last_error: String,
        hint: &'static str,
    },
    #[error("{device}: device task stopped unexpectedly")]
    TaskGone { device: String },
}

/// What a user can do, for causes we recognise.
fn hint(kind: DeviceKind, err: &str) -> &'static str {
    let e = err.to_ascii_lowercase();
    if kind == DeviceKind::Jbd
        && (e.contains("abort")
            || e.contains("refused")
            || e.contains("failed")
            || e.contains("in progress"))
    {
        ". Hint: is the phone app connected to this BMS? A JBD BMS accepts one connection"
    } else if e.contains("not found") {
        ""
    } else if e.contains("permission") || e.contains("accessdenied") || e.contains("access denied")
    {
        ". Hint: the user running blebatt needs BlueZ D-Bus access (group `bluetooth`, see systemd/)"
    } else if e.contains("org.freedesktop.dbus.error") || e.contains("serviceunknown") {
        ". Hint: is bluetoothd running (`systemctl status bluetooth`)?"
    } else if kind == DeviceKind::Jbd && e.contains("no reply") {
        ". Hint: a JBD BMS that stops answering often needs a reconnect; blebatt does that after 2 misses"
    } else {
        ""
    }
}

type Reply = oneshot::Sender<Result<Reading, DeviceError>>;

/// Handle to a running device task.
pub struct DeviceHandle {
    pub spec: Arc<DeviceSpec>,
    polls: mpsc::Sender<Reply>,
    /// Set to true to stop: interrupts a poll or connect in progress, then disconnects.
    stop: watch::Sender<bool>,
    /// The task's result: true when its device is known to be disconnected.
    join: JoinHandle<bool>,
}

impl DeviceHandle {
    /// Asks the device for a reading. Waits only on this device.
    pub async fn poll(&self) -> Result<Reading, DeviceError> {
        let gone = || DeviceError::TaskGone {
            device: self.spec.name.clone(),
        };
        let (tx, rx) = oneshot::channel();
        self.polls.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Interrupts whatever the device is doing, disconnects it and ends its task (bounded: a
    /// hung BlueZ call does not block shutdown past the grace period). Returns true when the
    /// device is known to be disconnected.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.stop.send(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.join).await {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => {
                log::warn!(
                    "{} ({}): could not confirm the disconnect",
                    self.spec.name,
                    self.spec.address
                );
                false
            }
            Ok(Err(_)) => false,
            Err(_) => {
                log::warn!(
                    "{} ({}): disconnect did not finish in {SHUTDOWN_GRACE:?}",
                    self.spec.name,
                    self.spec.address
                );
                self.join.abort();
                false
            }
        }
    }
}

enum State {
    Up,
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
}

struct Task<L> {
    spec: Arc<DeviceSpec>,
    link: L,
    state: State,
    jbd: JbdSession,
    consecutive_timeouts: u32,
    last_error: String,
    /// Last poll error logged at warning level, so a repeating one is logged once.
    last_logged: Option<String>,
    ever_connected: bool,
}

/// Starts the task for `spec` over `link`. It connects at once.
pub fn spawn<L: Link>(spec: DeviceSpec, link: L) -> DeviceHandle {
    let spec = Arc::new(spec);
    let (polls, rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let task = Task {
        spec: spec.clone(),
        link,
        state: State::Down {
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
        },
        jbd: JbdSession::new(),
        consecutive_timeouts: 0,
        last_error: "not connected yet".into(),
        last_logged: None,
        ever_connected: false,
    };
    let join = tokio::spawn(task.run(rx, stop_rx));
    DeviceHandle {
        spec,
        polls,
        stop,
        join,
    }
}

/// Doubles the backoff up to the cap, with +-20 % jitter so devices do not retry in lockstep.
fn next_backoff(prev: Duration) -> Duration {
    let base = if prev.is_zero() {
        BACKOFF_START
    } else {
        (prev * 2).min(BACKOFF_MAX)
    };
    base.mul_f64(0.8 + 0.4 * fastrand::f64())
}

impl<L: Link> Task<L> {
    /// Returns true when the device is known to be disconnected at the end.
    async fn run(
        mut self,
        mut polls: mpsc::Receiver<Reply>,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        enum Next {
            Poll(Reply),
            Connect,
            Stop,
        }
        loop {
            let retry_at = match self.state {
                State::Down { retry_at, .. } => Some(retry_at),
                State::Up => None,
            };
            let next = tokio::select! {
                biased;
                _ = stop.changed() => Next::Stop,
                reply = polls.recv() => reply.map_or(Next::Stop, Next::Poll),
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => Next::Connect,
            };
            // A stop interrupts a poll or a connect in progress: a silent device must not
            // keep us (and its connection) past shutdown.
            let stopped = match next {
                Next::Stop => true,
                Next::Poll(reply) => tokio::select! {
                    result = self.poll() => {
                        let _ = reply.send(result);
                        false
                    }
                    _ = stop.changed() => true,
                },
                Next::Connect => tokio::select! {
                    () = self.try_connect() => false,
                    _ = stop.changed() => true,
                },
            };
            if stopped {
                let done = self.link.disconnect().await;
                log::debug!(
                    "{}: {}",
                    self.spec.name,
                    if done {
                        "disconnected"
                    } else {
                        "disconnect not confirmed"
                    }
                );
                return done;
            }
        }
    }

    async fn try_connect(&mut self) {
        let State::Down { backoff, .. } = self.state else {
            return;
        };
        match self.link.connect().await {
            Ok(()) => {
                self.state = State::Up;
                self.jbd = JbdSession::new();
                self.consecutive_timeouts = 0;
                self.last_logged = None;
                log::info!(
                    "{} ({}): {}",
                    self.spec.name,
                    self.spec.address,
                    if self.ever_connected {
                        "reconnected"
                    } else {
                        "connected"
                    }
                );
                self.ever_connected = true;
            }
            Err(e) => {
                let backoff = next_backoff(backoff);
                let msg = e.to_string();
                // Log the first failure of a run at warning level, repeats at debug.
                if self.last_error != msg || backoff <= BACKOFF_START.mul_f64(1.2) {
                    log::warn!(
                        "{} ({}): connect failed: {msg}{}; retrying in {:.1}s",
                        self.spec.name,
                        self.spec.address,
                        hint(self.spec.kind, &msg),
                        backoff.as_secs_f64()
                    );
                } else {
                    log::debug!("{}: connect failed again: {msg}", self.spec.name);
                }
                self.last_error = msg;
                self.link.disconnect().await;
                self.state = State::Down {
                    retry_at: Instant::now() + backoff,
                    backoff,
                };
            }
        }
    }

    fn go_down(&mut self, why: &PollError) {
        let msg = why.to_string();
        log::warn!(
            "{} ({}): connection lost: {msg}; reconnecting",
            self.spec.name,
            self.spec.address
        );
        self.last_error = msg;
        // Reconnect at once after a loss; back off only if that fails.
        self.state = State::Down {
            retry_at: Instant::now(),
            backoff: Duration::ZERO,
        };
    }

    async fn poll(&mut self) -> Result<Reading, DeviceError> {
        if let State::Down { retry_at, .. } = self.state
            && Instant::now() >= retry_at
        {
            self.try_connect().await;
        }
        if let State::Down { .. } = self.state {
            return Err(DeviceError::Down {
                device: self.spec.name.clone(),
                address: self.spec.address.clone(),
                hint: hint(self.spec.kind, &self.last_error),
                last_error: self.last_error.clone(),
            });
        }
        let timeout = self.spec.timeout;
        let result = match self.spec.kind {
            DeviceKind::Jbd => poll_jbd(&mut self.link, &mut self.jbd, timeout)
                .await
                .map(|(r, t)| (Values::Jbd(r), t)),
            DeviceKind::Powermon => poll_powermon(&mut self.link, timeout)
                .await
                .map(|(r, t)| (Values::Powermon(r), t)),
        };
        match result {
            Ok((values, time_ns)) => {
                self.consecutive_timeouts = 0;
                if self.last_logged.take().is_some() {
                    log::info!("{}: polling again", self.spec.name);
                }
                Ok(Reading {
                    device: self.spec.name.clone(),
                    address: self.spec.address.clone(),
                    time_ns,
                    values,
                })
            }
            Err(e) => {
                if e.is_timeout() {
                    self.consecutive_timeouts += 1;
                }
                if e.is_link_fatal() || self.consecutive_timeouts >= TIMEOUTS_BEFORE_RECONNECT {
                    self.link.disconnect().await;
                    self.go_down(&e);
                } else {
                    let msg = e.to_string();
                    if self.last_logged.as_deref() != Some(msg.as_str()) {
                        log::warn!(
                            "{} ({}): poll failed: {msg}",
                            self.spec.name,
                            self.spec.address
                        );
                        self.last_logged = Some(msg);
                    }
                }
                Err(DeviceError::Poll {
                    device: self.spec.name.clone(),
                    address: self.spec.address.clone(),
                    hint: hint(self.spec.kind, &e.to_string()),
                    source: e,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_jittered_sixty() {
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..12 {
            b = next_backoff(b);
            seen.push(b);
        }
        assert!((0.8..=1.2).contains(&seen[0].as_secs_f64()), "{seen:?}");
        assert!((1.28..=2.88).contains(&seen[1].as_secs_f64()), "{seen:?}");
        for w in seen.windows(2) {
            assert!(w[1] <= BACKOFF_MAX.mul_f64(1.2), "{seen:?}");
        }
        assert!(
            seen[11] >= BACKOFF_MAX.mul_f64(0.8),
            "reaches the cap: {seen:?}"
        );
    }

    #[test]
    fn hints_name_what_to_do() {
        assert!(hint(DeviceKind::Jbd, "le-connection-abort-by-local").contains("phone app"));
        assert!(hint(DeviceKind::Jbd, "no reply to register 0x03").contains("reconnect"));
        assert!(
            hint(
                DeviceKind::Powermon,
                "org.freedesktop.DBus.Error.AccessDenied"
            )
            .contains("bluetooth")
        );
        assert_eq!(
            hint(DeviceKind::Powermon, "le-connection-abort-by-local"),
            ""
        );
    }
}
