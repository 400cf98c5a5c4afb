//! Energy in and out, charge in and out, time to empty and to full: one generic layer that
//! every battery kind feeds (its voltage, current, remaining and full capacity, see
//! [`crate::devices::Values::battery`]), between a reading and its line.
//!
//! - `counters.rs`: the arithmetic (pure).
//! - `state.rs`: the per-device state file (atomic writes).
//! - `fields.rs`: the fields it adds to a battery kind's measurement.
//! - here: [`Meter`], one per device task, and where the state lives ([`state_dir`]).

pub mod counters;
pub mod fields;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use counters::{Counters, Sample, Step, Totals};

/// The state is saved when a device's counters start, then at most this often, and at a
/// clean stop: SD cards wear out, so not on every poll.
pub const SAVE_EVERY: Duration = Duration::from_secs(60);
/// The system-wide state directory, used when it exists or can be made, and is writable.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/blebatt";

/// What the counters take from a battery reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Battery {
    pub voltage_v: f64,
    /// Positive: charging.
    pub current_a: f64,
    /// What is left, when the device reports it.
    pub remaining_ah: Option<f64>,
    /// What "full" holds, when the device reports it.
    pub full_ah: Option<f64>,
}

/// What the layer adds to a reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Derived {
    pub totals: Totals,
    pub time_to_empty_s: Option<i64>,
    pub time_to_full_s: Option<i64>,
}

/// One device's counters, and where they are saved.
#[derive(Debug)]
pub struct Meter {
    /// `name (address)`, for logs.
    who: String,
    address: String,
    counters: Counters,
    /// `None`: not saved (`once`, `--demo` without `--state-dir`, or saving failed).
    dir: Option<PathBuf>,
    /// The configured poll interval (`--interval`), if any.
    poll_s: Option<f64>,
    /// Reading time (Unix ns) of the last save.
    saved_at: Option<i64>,
    /// Changed since the last save.
    dirty: bool,
}

impl Meter {
    /// Counters kept in memory only.
    pub fn volatile(name: &str, address: &str) -> Self {
        Meter {
            who: format!("{name} ({address})"),
            address: address.to_string(),
            counters: Counters::default(),
            dir: None,
            poll_s: None,
            saved_at: None,
            dirty: false,
        }
    }

    /// Counters that continue from the device's state in `dir` (a state that cannot be used
    /// is one warning and a fresh start).
    pub fn persistent(
        name: &str,
        address: &str,
        dir: &Path,
        poll: Option<Duration>,
        now_ns: i64,
    ) -> Self {
        let mut m = Meter::volatile(name, address);
        m.poll_s = poll.map(|p| p.as_secs_f64());
        match state::load(dir, address, now_ns) {
            Ok(Some(saved)) => {
                log::debug!("{}: energy counters continue from {}", m.who, dir.display());
                m.counters = Counters::resume(saved.totals, saved.last);
            }
            Ok(None) => {}
            Err(e) => log::warn!(
                "{}: energy counters start afresh: the state file {} is not used: {e}",
                m.who,
                state::path(dir, address).display()
            ),
        }
        m.dir = Some(dir.to_path_buf());
        m
    }

    /// Adds a reading taken at `time_ns` (Unix ns): the counters and estimates after it.
    pub fn add(&mut self, b: &Battery, time_ns: i64) -> Derived {
        let step = self.counters.add(
            Sample {
                time_ns,
                voltage_v: b.voltage_v,
                current_a: b.current_a,
            },
            self.poll_s,
        );
        match step {
            Step::Gap { seconds } => log::info!(
                "{}: no reading for {}: that interval is not counted in the energy counters",
                self.who,
                humantime::format_duration(Duration::from_secs(seconds as u64))
            ),
            Step::Backwards { .. } => log::info!(
                "{}: a reading older than the last one (the clock went back): not counted",
                self.who
            ),
            Step::First | Step::Integrated { .. } => {}
        }
        self.dirty = true;
        let due = self
            .saved_at
            .is_none_or(|at| time_ns.saturating_sub(at) >= SAVE_EVERY.as_nanos() as i64);
        if due {
            self.save_at(time_ns);
        }
        let c = &self.counters;
        Derived {
            totals: c.totals,
            time_to_empty_s: b.remaining_ah.and_then(|r| c.time_to_empty_s(r)),
            time_to_full_s: b
                .remaining_ah
                .zip(b.full_ah)
                .and_then(|(r, f)| c.time_to_full_s(r, f)),
        }
    }

    /// Saves now if anything changed (a clean stop).
    pub fn save(&mut self) {
        self.save_at(crate::reading::now_ns());
    }

    fn save_at(&mut self, now_ns: i64) {
        let Some(dir) = &self.dir else { return };
        if !self.dirty {
            return;
        }
        let saved = state::Saved::new(&self.address, self.counters.totals, self.counters.last);
        match state::save(dir, &saved) {
            Ok(()) => {
                self.saved_at = Some(now_ns);
                self.dirty = false;
            }
            Err(e) => {
                log::warn!(
                    "{}: cannot save the energy counters in {}: {e}; they continue without being saved (a restart starts them afresh)",
                    self.who,
                    dir.display()
                );
                self.dir = None;
            }
        }
    }
}

/// Where the counters' state lives: `configured` (`--state-dir` / `state_dir`), else
/// systemd's `$STATE_DIRECTORY` (its `blebatt` entry when it lists several), else
/// `/var/lib/blebatt` when writable, else `$XDG_STATE_HOME/blebatt` (`~/.local/state/blebatt`).
/// `None`, after one warning, when the one chosen cannot be written.
pub fn state_dir(configured: Option<&Path>) -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k);
    let system_writable = || writable(Path::new(SYSTEM_STATE_DIR)).is_ok();
    let Some(candidate) = choose_state_dir(configured, &env, &system_writable) else {
        log::warn!(
            "no state directory (no $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME, and {SYSTEM_STATE_DIR} is not writable): energy counters start afresh at every restart (fix: --state-dir DIR)"
        );
        return None;
    };
    match writable(&candidate) {
        Ok(()) => {
            log::debug!("energy counters are saved in {}", candidate.display());
            Some(candidate)
        }
        Err(e) => {
            log::warn!(
                "state directory {} is not writable ({e}): energy counters start afresh at every restart (fix: --state-dir DIR, or state_dir in the config, naming a writable directory)",
                candidate.display()
            );
            None
        }
    }
}

/// The choice of [`state_dir`], given the environment and whether the system directory can
/// be written (asked only when it comes to that).
fn choose_state_dir(
    configured: Option<&Path>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    system_writable: &dyn Fn() -> bool,
) -> Option<PathBuf> {
    if let Some(dir) = configured {
        return Some(dir.to_path_buf());
    }
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(v) = var("STATE_DIRECTORY") {
        let list: Vec<PathBuf> = std::env::split_paths(&v).collect();
        let ours = list
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "blebatt"));
        if let Some(dir) = ours.or(list.first()) {
            return Some(dir.clone());
        }
    }
    if system_writable() {
        return Some(SYSTEM_STATE_DIR.into());
    }
    var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("blebatt"))
}

/// Makes `dir` if needed and checks that a file can be written in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".blebatt-write-test");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}

#[cfg(test)]
mod tests;
