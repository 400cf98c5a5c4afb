//! The device task: owns one link, reconnects with backoff, answers polls one at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::DeviceSpec;
use crate::devices::{Kind, PollError, Session, Values};
use crate::energy::Meter;
use crate::reading::Reading;
use crate::transport::{Cause, LinkError, Transport};

/// First reconnect delay after a failed attempt, and the cap.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Consecutive reply timeouts after which the link is presumed dead and re-established.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 2;
/// A failed pairing is tried again after this long at the earliest.
const PAIR_RETRY: Duration = Duration::from_secs(10 * 60);
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
        last_error: PollError,
        hint: &'static str,
    },
    #[error("{device}: device task stopped unexpectedly")]
    TaskGone { device: String },
}

/// What a user can do, for causes we recognise (by the error's identity, never its text):
/// the transport's own causes first, then what the device's kind makes likely.
fn hint(kind: &Kind, err: &PollError) -> &'static str {
    const ACCESS: &str = ". Hint: the user running blebatt needs BlueZ D-Bus access (group `bluetooth`, see systemd/)";
    const BLUEZ: &str = ". Hint: is bluetoothd running (`systemctl status bluetooth`)?";
    const ADAPTER: &str =
        ". Hint: is the adapter powered and unblocked (`bluetoothctl power on`, `rfkill list`)?";
    const BUSY: &str = ". Hint: another program (bluetoothctl, a scan) is using the adapter";
    const PAIRING: &str = ". Fix: pair it once with `blebatt pair` and its address, or set passkey in its [[device]] so that blebatt pairs by itself";
    let generic = match err {
        PollError::Link(e) => match e.cause() {
            Some(Cause::AccessDenied) => Some(ACCESS),
            Some(Cause::BluezUnavailable) => Some(BLUEZ),
            Some(Cause::AdapterNotReady) => Some(ADAPTER),
            Some(Cause::InProgress) => Some(BUSY),
            _ => None,
        },
        _ => None,
    };
    let fallback = match err {
        PollError::PairingRequired => PAIRING,
        _ => "",
    };
    generic.or_else(|| (kind.hint)(err)).unwrap_or(fallback)
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
    /// Connected, with the kind's conversation over this connection (a new one on every
    /// (re)connect).
    Up(Box<dyn Session>),
    Down {
        retry_at: Instant,
        /// Un-jittered backoff of the last failed attempt (zero: none failed yet).
        base: Duration,
    },
}

/// What this connection has already said about implausible values, so that a device that
/// keeps sending one is not a log line per poll: each omitted field once at debug, a caution
/// (e.g. a pack voltage far from its cells) once at warning. Reset on every (re)connect.
#[derive(Debug, Default)]
struct Noted {
    omitted: HashSet<(&'static str, Option<u8>)>,
    caution: bool,
}

impl Noted {
    fn report(&mut self, spec: &DeviceSpec, values: &dyn Values) {
        for o in values.omitted() {
            if self.omitted.insert(o.key()) {
                log::debug!(
                    "{} ({}): {o} (not printed; said once per connection)",
                    spec.name,
                    spec.address
                );
            }
        }
        if let Some(c) = values.caution()
            && !self.caution
        {
            self.caution = true;
            log::warn!(
                "{} ({}): {}; printed as read, said once per connection. Hint: {}",
                spec.name,
                spec.address,
                c.message,
                c.hint
            );
        }
    }
}

struct Task<L> {
    spec: Arc<DeviceSpec>,
    link: L,
    state: State,
    noted: Noted,
    /// Polls in a row that got no reply.
    consecutive_timeouts: u32,
    last_error: PollError,
    /// Last poll error logged at warning level, so a repeating one is logged once.
    last_logged: Option<String>,
    ever_connected: bool,
    /// "Requires pairing, and no passkey is configured" was said (it is said once).
    pairing_said: bool,
    /// No pairing attempt before this (one failed).
    pair_not_before: Option<Instant>,
    /// Backoff between connections of a device that wants pairing (its connect succeeds,
    /// its polls echo).
    pairing_backoff: Duration,
    /// The device's energy counters.
    meter: Meter,
}

/// Starts the task for `spec` over `link`, its energy counters in memory only. It connects
/// at once.
pub fn spawn<L: Transport>(spec: DeviceSpec, link: L) -> DeviceHandle {
    let meter = Meter::volatile(&spec.name, &spec.address);
    spawn_metered(spec, link, meter)
}

/// Starts the task for `spec` over `link`, with these energy counters (saved at a clean stop).
pub fn spawn_metered<L: Transport>(spec: DeviceSpec, link: L, meter: Meter) -> DeviceHandle {
    let spec = Arc::new(spec);
    let (polls, rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let join = tokio::spawn(Task::new(spec.clone(), link, meter).run(rx, stop_rx));
    DeviceHandle {
        spec,
        polls,
        stop,
        join,
    }
}

/// Jitter around the base delay, as a fraction either way.
const BACKOFF_JITTER: f64 = 0.2;

/// The un-jittered delay after a failed attempt: 1, 2, 4 ... 32, 60, 60 s.
fn next_base(prev: Duration) -> Duration {
    if prev.is_zero() {
        BACKOFF_START
    } else {
        (prev * 2).min(BACKOFF_MAX)
    }
}

/// The delay actually waited: `base` +-20 % (`unit` in [0, 1) picks where), never past the
/// cap, so devices do not retry in lockstep and the jitter never compounds.
fn jittered(base: Duration, unit: f64) -> Duration {
    base.mul_f64(1.0 - BACKOFF_JITTER + 2.0 * BACKOFF_JITTER * unit)
        .min(BACKOFF_MAX)
}

impl<L: Transport> Task<L> {
    fn new(spec: Arc<DeviceSpec>, link: L, meter: Meter) -> Self {
        Task {
            spec,
            link,
            state: State::Down {
                retry_at: Instant::now(),
                base: Duration::ZERO,
            },
            noted: Noted::default(),
            consecutive_timeouts: 0,
            last_error: PollError::Link(LinkError::NotConnected),
            last_logged: None,
            ever_connected: false,
            pairing_said: false,
            pair_not_before: None,
            pairing_backoff: Duration::ZERO,
            meter,
        }
    }

    /// Returns true when the device is known to be disconnected at the end.
    async fn run(
        mut self,
        mut polls: mpsc::Receiver<Reply>,
        mut stop: watch::Receiver<bool>,
    ) -> bool {
        enum Next {
            Poll(Reply),
            Connect,
            Lost,
            Stop,
        }
        loop {
            let retry_at = match self.state {
                State::Down { retry_at, .. } => Some(retry_at),
                State::Up(_) => None,
            };
            let up = retry_at.is_none();
            let next = tokio::select! {
                biased;
                _ = stop.changed() => Next::Stop,
                reply = polls.recv() => reply.map_or(Next::Stop, Next::Poll),
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if !up => Next::Connect,
                () = self.link.lost(), if up => Next::Lost,
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
                Next::Lost => {
                    // Reconnect now, not at the next poll: the loop connects at once.
                    self.link.disconnect().await;
                    self.go_down(&PollError::Link(LinkError::Disconnected));
                    false
                }
            };
            if stopped {
                self.meter.save();
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
        let State::Down { base, .. } = self.state else {
            return;
        };
        match self.open().await {
            Ok(session) => {
                self.state = State::Up(session);
                self.noted = Noted::default();
                self.consecutive_timeouts = 0;
                self.last_logged = None;
                log::info!(
                    "{} ({}): {}",
                    self.spec.name,
                    self.spec.address,
                    match (self.spec.kind.passive, self.ever_connected) {
                        (true, _) => "listening for its advertisements",
                        (false, true) => "reconnected",
                        (false, false) => "connected",
                    }
                );
                self.ever_connected = true;
            }
            Err(e) => {
                if e == PollError::PairingRequired && self.pair().await {
                    // Paired: connect again at once, now over the bond.
                    self.link.disconnect().await;
                    self.last_error = e;
                    self.state = State::Down {
                        retry_at: Instant::now(),
                        base: Duration::ZERO,
                    };
                    return;
                }
                let base = next_base(base);
                let delay = jittered(base, fastrand::f64());
                // Log the first failure of a run at warning level, repeats at debug. (That a
                // device wants pairing, `pair` has said.)
                if e == PollError::PairingRequired {
                    log::debug!("{}: connect failed: {e}", self.spec.name);
                } else if self.last_error != e || base == BACKOFF_START {
                    log::warn!(
                        "{} ({}): connect failed: {e}{}; retrying in {:.1}s",
                        self.spec.name,
                        self.spec.address,
                        hint(self.spec.kind, &e),
                        delay.as_secs_f64()
                    );
                } else {
                    log::debug!("{}: connect failed again: {e}", self.spec.name);
                }
                self.last_error = e;
                self.link.disconnect().await;
                self.state = State::Down {
                    retry_at: Instant::now() + delay,
                    base,
                };
            }
        }
    }

    /// Connects, and has a fresh session of the device's kind find and subscribe its
    /// characteristics: a device without them has not connected.
    /// A passive kind is not connected: its session listens instead.
    async fn open(&mut self) -> Result<Box<dyn Session>, PollError> {
        let found = if self.spec.kind.passive {
            Vec::new()
        } else {
            self.link.connect().await?
        };
        let mut session = (self.spec.kind.session)(&self.spec);
        session.open(&mut self.link, &found).await?;
        Ok(session)
    }

    /// The device wants pairing. With a passkey configured: pairs (a failed attempt is not
    /// repeated within [`PAIR_RETRY`]); true when paired. Without: says so, once, with the fix.
    async fn pair(&mut self) -> bool {
        let (name, address) = (&self.spec.name, &self.spec.address);
        let Some(passkey) = self.spec.passkey else {
            if !self.pairing_said {
                self.pairing_said = true;
                log::error!(
                    "{name} ({address}) {}{} (here: `blebatt pair {address}`)",
                    PollError::PairingRequired,
                    hint(self.spec.kind, &PollError::PairingRequired)
                );
            }
            return false;
        };
        if self.pair_not_before.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        log::info!(
            "{name} ({address}) requires Bluetooth pairing: pairing with the configured passkey"
        );
        match self.link.pair(passkey).await {
            Ok(()) => {
                log::info!("{name} ({address}): paired (BlueZ keeps the bond)");
                self.pair_not_before = None;
                true
            }
            Err(e) => {
                self.pair_not_before = Some(Instant::now() + PAIR_RETRY);
                log::error!(
                    "{name} ({address}): pairing failed: {e}; trying again in {} min",
                    PAIR_RETRY.as_secs() / 60
                );
                false
            }
        }
    }

    /// A failed poll, naming the device, with the hint for its cause.
    fn poll_error(&self, e: PollError) -> DeviceError {
        DeviceError::Poll {
            device: self.spec.name.clone(),
            address: self.spec.address.clone(),
            hint: hint(self.spec.kind, &e),
            source: e,
        }
    }

    fn go_down(&mut self, why: &PollError) {
        log::warn!(
            "{} ({}): connection lost: {why}; reconnecting",
            self.spec.name,
            self.spec.address
        );
        self.last_error = why.clone();
        // Reconnect at once after a loss; back off only if that fails.
        self.state = State::Down {
            retry_at: Instant::now(),
            base: Duration::ZERO,
        };
    }

    async fn poll(&mut self) -> Result<Reading, DeviceError> {
        // Twice at most: a connect that paired the device asks for another one at once.
        for _ in 0..2 {
            if let State::Down { retry_at, .. } = self.state
                && Instant::now() >= retry_at
            {
                self.try_connect().await;
            }
        }
        let session = match &mut self.state {
            State::Up(session) => session,
            State::Down { .. } => {
                return Err(DeviceError::Down {
                    device: self.spec.name.clone(),
                    address: self.spec.address.clone(),
                    hint: hint(self.spec.kind, &self.last_error),
                    last_error: self.last_error.clone(),
                });
            }
        };
        match session.poll(&mut self.link, self.spec.timeout).await {
            Ok((values, time_ns)) => {
                self.consecutive_timeouts = 0;
                self.pairing_backoff = Duration::ZERO;
                if self.last_logged.take().is_some() {
                    log::info!("{}: polling again", self.spec.name);
                }
                self.noted.report(&self.spec, values.as_ref());
                let derived = values.battery().map(|b| self.meter.add(&b, time_ns));
                Ok(Reading {
                    derived,
                    device: self.spec.name.clone(),
                    address: self.spec.address.clone(),
                    time_ns,
                    values,
                })
            }
            Err(e) if e == PollError::PairingRequired => {
                // Connected, and it echoes: pair (with a passkey) and reconnect at once, or
                // let go of its one connection and back off.
                let paired = self.pair().await;
                self.link.disconnect().await;
                self.consecutive_timeouts = 0;
                self.pairing_backoff = if paired {
                    Duration::ZERO
                } else {
                    next_base(self.pairing_backoff)
                };
                self.state = State::Down {
                    retry_at: Instant::now() + jittered(self.pairing_backoff, fastrand::f64()),
                    base: self.pairing_backoff,
                };
                self.last_error = e.clone();
                Err(self.poll_error(e))
            }
            // A passive device heard recently, not since the last poll: no line, no warning.
            Err(e @ PollError::NothingNew) => {
                log::debug!("{}: {e}", self.spec.name);
                Err(self.poll_error(e))
            }
            Err(e) => {
                // "In a row": any other outcome breaks the run of misses.
                if e.is_timeout() {
                    self.consecutive_timeouts += 1;
                } else {
                    self.consecutive_timeouts = 0;
                }
                // A passive device has no link to re-establish: its session keeps the scan
                // going (it listens again while the device is silent).
                let dead = e.is_link_fatal()
                    || (!self.spec.kind.passive
                        && self.consecutive_timeouts >= TIMEOUTS_BEFORE_RECONNECT);
                if dead {
                    self.link.disconnect().await;
                    self.go_down(&e);
                } else {
                    let msg = e.to_string();
                    if self.last_logged.as_deref() != Some(msg.as_str()) {
                        let (name, address) = (&self.spec.name, &self.spec.address);
                        let hint = hint(self.spec.kind, &e);
                        if matches!(e, PollError::Misconfigured(_)) {
                            log::error!("{name} ({address}): {msg}{hint}");
                        } else {
                            log::warn!("{name} ({address}): poll failed: {msg}{hint}");
                        }
                        self.last_logged = Some(msg);
                    }
                }
                Err(self.poll_error(e))
            }
        }
    }
}

#[cfg(test)]
mod tests;
