//! What every kind's pure protocol code shares: the note of an omitted value, hex as users
//! paste it, and the property-test configuration. No I/O, no async, no logging.

/// A value a device sent that it cannot mean (an NTC at -273.1 degC, a SoC of 250 %, a date in
/// month 0, padding where a field would be). The decoded reading leaves that field out and
/// lists it as one of these, so that the caller can say so: protocol code does not log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Omitted {
    /// Which field, as the protocol documents name it (e.g. "NTC temperature").
    pub field: &'static str,
    /// 1-based number of a numbered field (NTC 2), else `None`.
    pub index: Option<u8>,
    /// The value as received.
    pub raw: u32,
    /// What a value the device can mean looks like, with units (built from the named limits).
    pub expected: String,
}

impl Omitted {
    pub fn new(field: &'static str, raw: impl Into<u32>, expected: impl Into<String>) -> Self {
        Omitted {
            field,
            index: None,
            raw: raw.into(),
            expected: expected.into(),
        }
    }

    /// The same note for field number `index` (1-based).
    pub fn nth(self, index: usize) -> Self {
        Omitted {
            index: u8::try_from(index).ok(),
            ..self
        }
    }

    /// Which field this is about, whatever its value: the once-per-connection key.
    pub fn key(&self) -> (&'static str, Option<u8>) {
        (self.field, self.index)
    }
}

impl std::fmt::Display for Omitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.field)?;
        if let Some(i) = self.index {
            write!(f, " {i}")?;
        }
        write!(
            f,
            " omitted: raw {} (0x{:X}), expected {}",
            self.raw, self.raw, self.expected
        )
    }
}

/// Parses hex as users paste it: spaces, colons, commas, dashes and a `0x` prefix are allowed.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | ',' | '-' | '\t' | '\n'))
        .collect();
    hex::decode(&cleaned).map_err(|e| format!("not a hex string ({e}): {text:?}"))
}

/// Seed of every protocol property test unless `PROPTEST_RNG_SEED` gives another.
#[cfg(test)]
const PROPTEST_SEED: u64 = 0x0B1E_BA77;

/// Configuration of every protocol property test, so that CI never flakes:
/// - a fixed RNG seed ([`PROPTEST_SEED`]): the same cases on every run and machine. To explore
///   new cases locally, set `PROPTEST_RNG_SEED=<u64>` (proptest reads it into `rng_seed`, which
///   this then keeps);
/// - failure persistence on (proptest's default, `FileFailurePersistence::SourceParallel`):
///   a failing case found under any seed is written to `proptest-regressions/<path>.txt` under
///   the crate; those files are committed and replayed first on every run;
/// - everything else from proptest's environment (`PROPTEST_CASES` for `.ci/run`'s long run).
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let mut config = Config::default();
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(PROPTEST_SEED);
    }
    config
}
