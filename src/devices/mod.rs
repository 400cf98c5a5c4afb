//! The kinds of device blebatt reads, one folder each, and the registry of them.
//!
//! A kind's folder holds everything that is that kind's knowledge:
//! - `protocol.rs`: bytes <-> typed values. Pure: no I/O, no async, no logging; fuzzed.
//! - `session.rs`: what to subscribe, write and read over a kind-agnostic [`Gatt`] transport,
//!   and the per-connection state (reassembly, what was asked once per connection).
//! - `fields.rs`: the measurement's schema (every field once, with its type and unit) and the
//!   typed reading -> fields mapping, next to the decoder.
//! - `demo.rs`: the simulated device (the same bytes the radio would give).
//! - `mod.rs`: its [`Kind`] entry: name, how `scan` recognises it, `decode`, hints.
//!
//! [`KINDS`] is the one list that config, the command line, `scan`, `decode`, output, the
//! demo and the generic tests iterate over: adding a kind is its folder and one line there.

pub mod jbd;
pub mod jk;
pub mod powermon;
pub mod protocol;
pub mod schema;
pub mod victron;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod fuzz_tests;

use std::any::Any;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::BoxFuture;
use uuid::Uuid;

pub use protocol::Omitted;
pub use schema::{FieldSpec, FieldType, Fields, Presence, Value};

use crate::demo::DemoDevice;
use crate::device::DeviceSpec;
use crate::transport::{CharInfo, Gatt, LinkError};

/// Every kind blebatt knows, in the order `--demo` and `scan` list them.
pub static KINDS: &[&Kind] = &[&jbd::KIND, &powermon::KIND, &jk::KIND, &victron::KIND];

/// One kind of device: what the rest of blebatt needs to know of it. A static value per kind
/// (`devices/<kind>/mod.rs`), listed once in [`KINDS`].
pub struct Kind {
    /// Its name in configuration (`kind = "jbd"`), on the command line and in `scan`.
    pub name: &'static str,
    /// What a user calls it, for help texts.
    pub title: &'static str,
    /// The line protocol measurement.
    pub measurement: &'static str,
    /// Tags beyond `device` and `address` its lines may carry.
    pub tags: &'static [&'static str],
    /// The measurement's fields, in the order they are printed.
    pub schema: fn() -> Vec<FieldSpec>,
    /// A fresh per-connection session for the configured device.
    pub session: fn(&DeviceSpec) -> Box<dyn Session>,
    /// Checks a configured `password`; `None`: this kind has no password (the key is refused).
    pub password: Option<CheckFn>,
    /// Whether this kind's devices may require BLE passkey pairing (the `passkey` key).
    pub pairing: bool,
    /// Checks a configured `key` (a secret the device's data is encrypted with); `Some`: this
    /// kind's devices need one, `None`: the key is refused.
    pub key: Option<CheckFn>,
    /// Passive: the device is never connected; its session listens to its advertisements
    /// ([`Gatt::listen`]) instead.
    pub passive: bool,
    /// Whether an advertising device looks like this kind (for `scan`).
    pub looks_like: fn(&Advertised<'_>) -> bool,
    /// `blebatt decode <kind>`.
    pub decode: Decoder,
    /// The simulated devices of `--demo`.
    pub demo: fn() -> Vec<DemoDevice>,
    /// What a user can do about an error this kind makes likely (matched on the error's
    /// identity, never its text); `None` leaves it to the generic hints.
    pub hint: fn(&PollError) -> Option<&'static str>,
}

impl Kind {
    /// The schema entry a printed field key belongs to (`cell_7` -> the `cell` family).
    pub fn field(&self, key: &str) -> Option<FieldSpec> {
        (self.schema)().into_iter().find(|f| f.matches(key))
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Kinds are statics: one is equal only to itself.
impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Kind {}

/// The kind named `name` (as in `kind = "jbd"`).
pub fn by_name(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// Every kind's name, in registry order.
pub fn names() -> &'static [&'static str] {
    static NAMES: LazyLock<Vec<&'static str>> =
        LazyLock::new(|| KINDS.iter().map(|k| k.name).collect());
    &NAMES
}

/// What `blebatt decode <kind>` takes and does.
pub struct Decoder {
    /// The subcommand's help.
    pub about: &'static str,
    /// Whether it takes several hex arguments (notifications in order) or exactly one.
    pub many: bool,
    /// Whether it needs the device's key (`--key`) to read the bytes.
    pub key: bool,
    /// Real captured inputs, with their source: shown in the help, and the seeds of the
    /// generic decoder tests.
    pub examples: &'static [Example],
    /// Captured bytes (hex, as users paste them) to values.
    pub run: DecodeFn,
}

/// One real capture a decoder reads.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// What it is and where it comes from.
    pub what: &'static str,
    /// The device's key, for a kind whose decoder needs one.
    pub key: Option<&'static str>,
    /// The hex arguments, in order.
    pub hex: &'static [&'static str],
}

/// What `blebatt decode <kind>` was given.
#[derive(Debug, Clone, Copy)]
pub struct DecodeInput<'a> {
    pub hex: &'a [String],
    /// `--key`, for a kind whose decoder needs one.
    pub key: Option<&'a str>,
}

/// Checks a configured value; the error says what a valid one looks like, never the value.
pub type CheckFn = fn(&str) -> Result<(), String>;

/// See [`Decoder::run`]; the error is one line for the user.
pub type DecodeFn = fn(DecodeInput<'_>) -> Result<Box<dyn Values>, String>;

/// What an advertising device shows `scan`.
#[derive(Debug, Clone, Copy)]
pub struct Advertised<'a> {
    /// Its advertised name, lower case (empty when none).
    pub name: &'a str,
    /// The service UUIDs it advertises.
    pub services: &'a [Uuid],
    /// The company ids of the manufacturer data it advertises.
    pub manufacturers: &'a [u16],
}

/// The kind a scanned device looks like, if any.
pub fn recognise(adv: &Advertised<'_>) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| (k.looks_like)(adv))
}

/// A kind's typed reading, as the rest of blebatt sees it.
pub trait Values: std::fmt::Debug + Send + Sync + 'static {
    fn kind(&self) -> &'static Kind;
    /// Tags beyond `device` and `address` (names from [`Kind::tags`]), in order; an empty
    /// value is left out by the writer.
    fn tags(&self, tag: &mut dyn FnMut(&'static str, &str));
    /// The measurement's fields, in schema order.
    fn fields(&self, out: &mut dyn Fields);
    /// Values the device sent that it cannot mean, left out of the reading.
    fn omitted(&self) -> &[Omitted] {
        &[]
    }
    /// Something printed as read but worth one warning per connection.
    fn caution(&self) -> Option<Caution> {
        None
    }
    /// What the energy counters take from it (`energy/`); `None` for a kind that measures no
    /// battery. A kind that gives one ends its schema with [`crate::energy::fields::SCHEMA`].
    fn battery(&self) -> Option<crate::energy::Battery> {
        None
    }
    /// The concrete reading, for tests and benches that look inside.
    fn as_any(&self) -> &dyn Any;
}

/// See [`Values::caution`].
#[derive(Debug, Clone, PartialEq)]
pub struct Caution {
    /// What is wrong, e.g. a pack voltage far from the sum of its cells.
    pub message: String,
    /// What the user can check.
    pub hint: &'static str,
}

/// What a session's poll gives: the values and when the last reply byte arrived (Unix ns).
pub type Polled = (Arc<dyn Values>, i64);

/// A kind's typed reading and its time, as a session's poll gives them.
pub fn polled(result: Result<(impl Values, i64), PollError>) -> Result<Polled, PollError> {
    result.map(|(values, time_ns)| (Arc::new(values) as Arc<dyn Values>, time_ns))
}

/// The per-connection conversation with one device of a kind, over any transport.
pub trait Session: Send {
    /// Right after a (re)connect: finds this kind's characteristics among those discovered,
    /// subscribes what it needs and authenticates where the device wants it. An error here is
    /// a failed connect.
    fn open<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        found: &'a [CharInfo],
    ) -> BoxFuture<'a, Result<(), PollError>>;
    /// One poll: request, reassemble, verify, decode. Each reply is bounded by `timeout`.
    fn poll<'a>(
        &'a mut self,
        link: &'a mut dyn Gatt,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Polled, PollError>>;
}

/// A failed poll.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Link(#[from] LinkError),
    /// `request` names what was asked, e.g. "register 0x03".
    #[error("no reply to {request} within {after:?}")]
    NoReply {
        request: &'static str,
        after: Duration,
    },
    /// The device answered, and the answer does not decode (or refuses, e.g. a password).
    #[error(transparent)]
    Decode(DecodeError),
    /// The device echoes what is written instead of answering: its firmware wants BLE pairing
    /// (with a passkey) before it talks.
    #[error("requires Bluetooth pairing (it echoes each request back instead of answering)")]
    PairingRequired,
    /// A passive device: no advertisement heard for this long (or since listening began).
    #[error("no advertisement heard for {after:?}")]
    Silent { after: Duration },
    /// A passive device: it was heard recently, but not since the last poll. No line, and
    /// nothing to warn about.
    #[error("no new advertisement since the last poll")]
    NothingNew,
    /// What the user configured does not fit the device (e.g. a wrong key): an error, said
    /// once; polling goes on, so a corrected device is picked up.
    #[error(transparent)]
    Misconfigured(DecodeError),
}

impl PollError {
    /// A decoder's error (a kind's own error type).
    pub fn decode(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        PollError::Decode(DecodeError(Arc::new(e)))
    }

    /// True when the link should be torn down and re-established.
    pub fn is_link_fatal(&self) -> bool {
        matches!(self, PollError::Link(e) if e.is_fatal())
    }

    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            PollError::NoReply { .. }
                | PollError::Silent { .. }
                | PollError::Link(LinkError::Timeout { .. })
        )
    }

    /// A configuration that does not fit the device: see [`PollError::Misconfigured`].
    pub fn misconfigured(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        PollError::Misconfigured(DecodeError(Arc::new(e)))
    }
}

/// A kind's decode error, kept whole: its type is its identity ([`DecodeError::get`]).
#[derive(Debug, Clone)]
pub struct DecodeError(Arc<dyn std::error::Error + Send + Sync>);

impl DecodeError {
    /// The kind's own error, when it is an `E`.
    pub fn get<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DecodeError {}

/// Two decode errors are the same when they say the same: used only to log a repeating
/// failure once.
impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_keep_their_type_and_are_equal_when_they_say_the_same() {
        use jbd::protocol::JbdError;
        let bad_end = || {
            PollError::decode(JbdError::BadEnd {
                register: 3,
                got: 0,
            })
        };
        assert_eq!(bad_end(), bad_end());
        assert_ne!(bad_end(), PollError::decode(JbdError::NoFrame));
        let PollError::Decode(e) = bad_end() else {
            panic!("a decode error")
        };
        assert_eq!(
            e.get::<JbdError>(),
            Some(&JbdError::BadEnd {
                register: 3,
                got: 0
            })
        );
        assert!(e.get::<powermon::protocol::PowermonError>().is_none());
    }
}
