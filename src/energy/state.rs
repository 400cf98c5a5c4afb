//! The counters' state on disk: one small TOML file per device in the state directory,
//! written atomically (temporary file, fsync, rename, fsync of the directory), so that a
//! `kill -9` or a power cut leaves the old state or the new one, never half of one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::counters::{Sample, Totals};

/// The format's version; another one is not read (a fresh start, with a warning).
const VERSION: u32 = 1;
/// A saved reading later than now by more than this is "from the future" (a clock that was
/// wrong when it was saved): not trusted.
const FUTURE_TOLERANCE_NS: i64 = 5 * 60 * 1_000_000_000;
/// A state file is a few hundred bytes; anything much bigger is not one.
const MAX_BYTES: u64 = 64 * 1024;

/// What is saved for one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub version: u32,
    /// The device's address: a file of another device is not used.
    pub address: String,
    pub totals: Totals,
    /// The last reading: the first interval after a restart starts here.
    pub last: Option<Sample>,
}

impl Saved {
    pub fn new(address: &str, totals: Totals, last: Option<Sample>) -> Self {
        Saved {
            version: VERSION,
            address: address.to_string(),
            totals,
            last,
        }
    }
}

/// Why a state file was not used (each is one warning, then a fresh start).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("it is not a blebatt state file ({0})")]
    Corrupt(String),
    #[error("it is of format version {0}, not {VERSION}")]
    Version(u32),
    #[error("it belongs to {0}")]
    OtherDevice(String),
    #[error("its last reading is in the future (the clock was wrong when it was saved)")]
    Future,
    #[error("its counters are negative or not numbers")]
    BadTotals,
}

/// The state file of the device at `address` in `dir`.
pub fn path(dir: &Path, address: &str) -> PathBuf {
    dir.join(format!("{}.toml", address.replace(':', "")))
}

/// Parses and checks a state file's text for `address`, at `now_ns`.
pub fn parse(text: &str, address: &str, now_ns: i64) -> Result<Saved, StateError> {
    let saved: Saved = toml::from_str(text).map_err(|e| StateError::Corrupt(e.message().into()))?;
    if saved.version != VERSION {
        return Err(StateError::Version(saved.version));
    }
    if !saved.address.eq_ignore_ascii_case(address) {
        return Err(StateError::OtherDevice(saved.address));
    }
    let t = &saved.totals;
    let good = |x: f64| x.is_finite() && x >= 0.0;
    if ![t.charged_wh, t.discharged_wh, t.charged_ah, t.discharged_ah]
        .into_iter()
        .all(good)
    {
        return Err(StateError::BadTotals);
    }
    if let Some(last) = saved.last {
        if last.time_ns > now_ns.saturating_add(FUTURE_TOLERANCE_NS) {
            return Err(StateError::Future);
        }
        if !(last.voltage_v.is_finite() && last.current_a.is_finite()) {
            return Err(StateError::Corrupt("a reading that is not a number".into()));
        }
    }
    Ok(saved)
}

/// Reads the state of `address` from `dir`: `Ok(None)` when there is none yet.
pub fn load(dir: &Path, address: &str, now_ns: i64) -> Result<Option<Saved>, StateError> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path(dir, address)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Read(e.to_string())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StateError::Read(e.to_string()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(StateError::Corrupt("too large".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| StateError::Corrupt("not text".into()))?;
    parse(&text, address, now_ns).map(Some)
}

/// Writes the state atomically: a crash at any point leaves the previous file or this one.
pub fn save(dir: &Path, saved: &Saved) -> std::io::Result<()> {
    let text = toml::to_string(saved).map_err(std::io::Error::other)?;
    let target = path(dir, &saved.address);
    let tmp = target.with_extension("toml.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &target)?;
    // The rename itself is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = "AA:BB:CC:DD:EE:01";
    const NOW: i64 = 1_800_000_000_000_000_000;

    fn saved() -> Saved {
        Saved::new(
            ADDR,
            Totals {
                charged_wh: 1234.5678,
                discharged_wh: 987.0,
                charged_ah: 95.25,
                discharged_ah: 76.5,
            },
            Some(Sample {
                time_ns: NOW - 10_000_000_000,
                voltage_v: 13.28,
                current_a: -4.2,
            }),
        )
    }

    #[test]
    fn state_round_trips_through_a_file_exactly() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), ADDR, NOW), Ok(None), "none yet");
        save(dir.path(), &saved()).unwrap();
        assert_eq!(load(dir.path(), ADDR, NOW), Ok(Some(saved())));
        // Saving again replaces it, and leaves no temporary file behind.
        let mut later = saved();
        later.totals.charged_wh += 1.0;
        save(dir.path(), &later).unwrap();
        assert_eq!(load(dir.path(), ADDR, NOW), Ok(Some(later)));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["AABBCCDDEE01.toml"]);
    }

    #[test]
    fn a_corrupt_truncated_foreign_or_future_state_is_refused_with_its_reason() {
        let text = toml::to_string(&saved()).unwrap();
        assert_eq!(parse(&text, ADDR, NOW), Ok(saved()));
        assert!(matches!(
            parse(&text[..text.len() / 2], ADDR, NOW),
            Err(StateError::Corrupt(_))
        ));
        assert!(matches!(parse("", ADDR, NOW), Err(StateError::Corrupt(_))));
        assert!(matches!(
            parse("\u{0}\u{1}garbage", ADDR, NOW),
            Err(StateError::Corrupt(_))
        ));
        assert_eq!(
            parse(&text, "AA:BB:CC:DD:EE:02", NOW),
            Err(StateError::OtherDevice(ADDR.into()))
        );
        assert_eq!(
            parse(&text.replace("version = 1", "version = 2"), ADDR, NOW),
            Err(StateError::Version(2))
        );
        let ten_min = 600_000_000_000;
        assert_eq!(
            parse(&text, ADDR, NOW - 10_000_000_000 - ten_min),
            Err(StateError::Future)
        );
        // A little ahead (a clock stepped by NTP since) is fine: up to 5 minutes.
        assert!(parse(&text, ADDR, NOW - 10_000_000_000 - 240_000_000_000).is_ok());
        assert_eq!(
            parse(
                &text.replace("charged_wh = 1234.5678", "charged_wh = -1.0"),
                ADDR,
                NOW
            ),
            Err(StateError::BadTotals)
        );
        assert_eq!(
            parse(
                &text.replace("charged_wh = 1234.5678", "charged_wh = nan"),
                ADDR,
                NOW
            ),
            Err(StateError::BadTotals)
        );
    }

    #[test]
    fn an_unreadable_or_oversized_file_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        // A few KiB (say, a comment someone added) is still read; 64 KiB and more is not.
        let mut text = toml::to_string(&saved()).unwrap();
        text.push_str(&format!("# {}\n", "x".repeat(4000)));
        std::fs::write(path(dir.path(), ADDR), &text).unwrap();
        assert_eq!(load(dir.path(), ADDR, NOW), Ok(Some(saved())));
        std::fs::write(path(dir.path(), ADDR), vec![b'#'; 100_000]).unwrap();
        assert!(matches!(
            load(dir.path(), ADDR, NOW),
            Err(StateError::Corrupt(_))
        ));
        std::fs::write(path(dir.path(), ADDR), [0xFF, 0xFE]).unwrap();
        assert!(matches!(
            load(dir.path(), ADDR, NOW),
            Err(StateError::Corrupt(_))
        ));
        std::fs::remove_file(path(dir.path(), ADDR)).unwrap();
        std::fs::create_dir(path(dir.path(), ADDR)).unwrap();
        assert!(load(dir.path(), ADDR, NOW).is_err());
    }
}
