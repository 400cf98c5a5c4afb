//! Configured secrets: a device's app password and a BLE pairing passkey. Neither has a
//! `Display`, and their `Debug` is redacted, so no log line, `-v` included, can show one.

/// A device's password as configured (checked by its kind, see `Kind::password`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret itself, for the one place that sends it to the device.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The largest passkey BlueZ takes (`Agent1.RequestPasskey` returns 0..999999).
pub const PASSKEY_MAX: u32 = 999_999;

/// A BLE pairing passkey: six decimal digits, 000000 to 999999.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Passkey(u32);

impl Passkey {
    /// Six digits as text (`"012345"`), or a number up to 999999 (`12345` means `012345`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() != 6 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a passkey is six digits, e.g. 123456".into());
        }
        t.parse().map(Passkey).map_err(|_| "not a number".into())
    }

    pub fn from_number(n: i64) -> Result<Self, String> {
        u32::try_from(n)
            .ok()
            .filter(|&n| n <= PASSKEY_MAX)
            .map(Passkey)
            .ok_or_else(|| "a passkey is six digits, 000000 to 999999, e.g. 123456".into())
    }

    /// The value BlueZ's agent call returns.
    pub fn value(self) -> u32 {
        self.0
    }
}

impl std::fmt::Debug for Passkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passkey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkeys_are_six_digits_as_text_or_a_number_up_to_999999() {
        assert_eq!(Passkey::parse("123456").unwrap().value(), 123_456);
        assert_eq!(Passkey::parse(" 012345 ").unwrap().value(), 12_345);
        for bad in ["12345", "1234567", "12345a", "", "-12345", "+12345"] {
            assert!(Passkey::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Passkey::from_number(0).unwrap().value(), 0);
        assert_eq!(Passkey::from_number(999_999).unwrap().value(), 999_999);
        assert!(Passkey::from_number(1_000_000).is_err());
        assert!(Passkey::from_number(-1).is_err());
        assert!(Passkey::from_number(i64::from(u32::MAX) + 1).is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::new("abc123");
        let p = Passkey::parse("654321").unwrap();
        let shown = format!("{s:?} {p:?} {:#?}", (s.clone(), p));
        assert!(
            !shown.contains("abc123") && !shown.contains("654321"),
            "{shown}"
        );
        assert_eq!(s.expose(), "abc123");
        // Shown as what it is, so a log line still says a secret was there.
        assert_eq!(
            format!("{s:?} {p:?}"),
            "Secret(<redacted>) Passkey(<redacted>)"
        );
    }
}
