//! Pure protocol code: bytes in, typed readings out. No I/O, no async, no logging.

pub mod jbd;
pub mod powermon;

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

#[cfg(test)]
mod fuzz_tests;
