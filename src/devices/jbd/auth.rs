//! The `FF AA` app-password handshake some JBD dongles want before they answer `DD` requests:
//! its frames and the password encryption. Pure: no I/O, no async, no logging.
//!
//! Facts from syssi/esphome-jbd-bms (`components/jbd_bms_ble`, PR #148) and its captures in
//! `docs/ffaa-auth-flow/`, summarised with test vectors in `shared/notes/next-wave.md` section
//! 1a. Where the captures' comments contradict their bytes, the bytes win (`00` is success).
//!
//! The handshake authenticates; it changes nothing. Command 0x16 (change password) exists in
//! the protocol and is deliberately not encodable here.

/// Every handshake frame starts with these two bytes.
pub const START: [u8; 2] = [0xFF, 0xAA];
/// Header (start, command, length) and trailing checksum around the data.
pub const OVERHEAD: usize = 5;
/// The app key sent with 0x15: "000000" in every capture, whatever the user's password.
pub const APP_KEY: &[u8; 6] = b"000000";
/// The vendor's fixed root password, sent encrypted with 0x1D.
pub const ROOT_PASSWORD: &[u8; 15] = b"JBDbtpwd!@#2023";
/// A user (Bluetooth) password is exactly this many characters, `[0-9A-Za-z]`.
pub const PASSWORD_LEN: usize = 6;

/// The handshake's commands, host to BMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// The app key; the answer says whether a password is set.
    AppKey = 0x15,
    /// Asks for the random byte the next password is encrypted with.
    Random = 0x17,
    /// The user's Bluetooth password, encrypted.
    UserPassword = 0x18,
    /// The vendor's root password, encrypted.
    RootPassword = 0x1D,
}

impl Command {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Answer values (`DATA[0]` of a one-byte answer).
pub const ACK: u8 = 0x00;
pub const NACK: u8 = 0x01;
/// Answer to the app key: the dongle has no password set; nothing more to do.
pub const NO_PASSWORD: u8 = 0x02;

/// A user's Bluetooth password: six characters `[0-9A-Za-z]`. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password([u8; PASSWORD_LEN]);

impl Password {
    /// Checks the form; the error says what a valid one looks like (never the value).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes: [u8; PASSWORD_LEN] = text
            .as_bytes()
            .try_into()
            .ok()
            .filter(|b: &[u8; PASSWORD_LEN]| b.iter().all(u8::is_ascii_alphanumeric))
            .ok_or_else(|| {
                format!(
                    "a JBD Bluetooth password is exactly {PASSWORD_LEN} letters or digits (the one set in the JBD app, often 123456)"
                )
            })?;
        Ok(Password(bytes))
    }

    pub fn bytes(&self) -> &[u8; PASSWORD_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Plain 8-bit sum of command, length and data (not the `DD` frames' 16-bit complement).
pub fn checksum(command: u8, data: &[u8]) -> u8 {
    data.iter()
        .fold(command.wrapping_add(data.len() as u8), |s, b| {
            s.wrapping_add(*b)
        })
}

/// `FF AA command len data sum`. `data` is at most 15 bytes (the root password).
pub fn encode(command: Command, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(data.len() + OVERHEAD);
    f.extend(START);
    f.push(command.code());
    f.push(data.len() as u8);
    f.extend(data);
    f.push(checksum(command.code(), data));
    f
}

/// `enc[i] = (MAC[i] ^ secret[i]) + random`, mod 256; `MAC[i]` is 0 past the address's six
/// bytes. `mac` is in display order (`A4:C1:37:04:2D:BE` -> `A4 C1 37 04 2D BE`).
pub fn encrypt(mac: [u8; 6], random: u8, secret: &[u8]) -> Vec<u8> {
    secret
        .iter()
        .enumerate()
        .map(|(i, s)| (mac.get(i).copied().unwrap_or(0) ^ s).wrapping_add(random))
        .collect()
}

/// 0x15 with the app key.
pub fn app_key_frame() -> Vec<u8> {
    encode(Command::AppKey, APP_KEY)
}

/// 0x17: asks for the random byte.
pub fn random_request() -> Vec<u8> {
    encode(Command::Random, &[])
}

/// 0x18 with the user's password, encrypted with `random`.
pub fn user_password_frame(mac: [u8; 6], random: u8, password: &Password) -> Vec<u8> {
    encode(
        Command::UserPassword,
        &encrypt(mac, random, password.bytes()),
    )
}

/// 0x1D with the root password, encrypted with `random`.
pub fn root_password_frame(mac: [u8; 6], random: u8) -> Vec<u8> {
    encode(Command::RootPassword, &encrypt(mac, random, ROOT_PASSWORD))
}

/// A one-byte answer of the BMS to a handshake command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The command answered.
    pub command: u8,
    /// ACK / NACK / NO_PASSWORD, or the random byte (0x17).
    pub value: u8,
}

/// Reads a notification as a handshake answer (`FF AA cmd 01 value sum`): `None` when it is
/// not one (another frame, a wrong length or checksum). An answer fits one notification.
pub fn parse_answer(bytes: &[u8]) -> Option<Answer> {
    match *bytes {
        [0xFF, 0xAA, command, 1, value, sum] if checksum(command, &[value]) == sum => {
            Some(Answer { command, value })
        }
        _ => None,
    }
}

/// How the handshake fails, by identity (the hints match on these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 0x18 answered NACK.
    #[error("wrong Bluetooth password: the BMS refused it")]
    WrongPassword,
    /// 0x15 answered neither "password required" nor "no password".
    #[error("the BMS refused the app key (answer 0x{0:02X})")]
    AppKeyRefused(u8),
}

/// The address's six bytes in display order (`A4:C1:37:04:2D:BE` -> `A4 C1 37 04 2D BE`), as
/// the encryption takes them; `None` unless it is six hex pairs separated by `:`.
pub fn mac_bytes(address: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = address.split(':');
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::devices::protocol::parse_hex;

    const MAC_A: [u8; 6] = [0xA4, 0xC1, 0x37, 0x04, 0x2D, 0xBE];
    const MAC_B: [u8; 6] = [0x10, 0xA5, 0x62, 0x32, 0x75, 0x36];

    fn hex(s: &str) -> Vec<u8> {
        parse_hex(s).unwrap()
    }

    /// The published captures (esphome-jbd-bms docs/ffaa-auth-flow), next-wave.md 1a.
    #[test]
    fn user_passwords_encrypt_to_the_captured_frames() {
        let cases = [
            (MAC_A, "000000", 0x62, "FF AA 18 06 F6 53 69 96 7F F0 D5"),
            (MAC_A, "111111", 0x21, "FF AA 18 06 B6 11 27 56 3D B0 4F"),
            (MAC_A, "123412", 0x61, "FF AA 18 06 F6 54 65 91 7D ED C8"),
            (MAC_A, "123123", 0x37, "FF AA 18 06 CC 2A 3B 6C 56 C4 D5"),
            (MAC_B, "123456", 0x24, "FF AA 18 06 45 BB 75 2A 64 24 45"),
            (MAC_B, "123456", 0x45, "FF AA 18 06 66 DC 96 4B 85 45 0B"),
        ];
        for (mac, password, random, wire) in cases {
            let p = Password::parse(password).unwrap();
            assert_eq!(
                user_password_frame(mac, random, &p),
                hex(wire),
                "{password} R={random:02X}"
            );
        }
    }

    #[test]
    fn the_root_password_encrypts_to_the_captured_frames() {
        let cases = [
            (
                MAC_A,
                0x61,
                "FF AA 1D 0F 4F E4 D4 C7 BA 2F D8 C5 82 A1 84 93 91 93 94 72",
            ),
            (
                MAC_A,
                0x37,
                "FF AA 1D 0F 25 BA AA 9D 90 05 AE 9B 58 77 5A 69 67 69 6A FC",
            ),
            (
                MAC_B,
                0xC9,
                "FF AA 1D 0F 23 B0 EF 19 CA 0F 40 2D EA 09 EC FB F9 FB FC 17",
            ),
            (
                MAC_B,
                0xF3,
                "FF AA 1D 0F 4D DA 19 43 F4 39 6A 57 14 33 16 25 23 25 26 8D",
            ),
        ];
        for (mac, random, wire) in cases {
            assert_eq!(
                root_password_frame(mac, random),
                hex(wire),
                "R={random:02X}"
            );
        }
    }

    #[test]
    fn the_fixed_frames_are_the_captured_ones() {
        assert_eq!(app_key_frame(), hex("FF AA 15 06 30 30 30 30 30 30 3B"));
        assert_eq!(random_request(), hex("FF AA 17 00 17"));
    }

    #[test]
    fn captured_answers_parse_and_anything_else_is_not_an_answer() {
        let answer = |command, value| Some(Answer { command, value });
        assert_eq!(parse_answer(&hex("FF AA 15 01 00 16")), answer(0x15, ACK));
        assert_eq!(parse_answer(&hex("FF AA 18 01 00 19")), answer(0x18, ACK));
        assert_eq!(parse_answer(&hex("FF AA 18 01 01 1A")), answer(0x18, NACK));
        assert_eq!(parse_answer(&hex("FF AA 1D 01 00 1E")), answer(0x1D, ACK));
        // 0x17 answers carry the random byte.
        let random = encode(Command::Random, &[0x62]);
        assert_eq!(parse_answer(&random), answer(0x17, 0x62));
        for not in [
            "FF AA 18 01 00 1A",                // bad checksum
            "FF AA 18 02 00 00 1A",             // two data bytes
            "FF AB 18 01 00 19",                // not the start
            "FF AA 18 01 00",                   // cut short
            "DD 03 00 00 00 00 77",             // a DD frame
            "FF AA 15 06 30 30 30 30 30 30 3B", // an echo of the app key
        ] {
            assert_eq!(parse_answer(&hex(not)), None, "{not}");
        }
    }

    #[test]
    fn addresses_become_their_bytes_in_display_order() {
        assert_eq!(mac_bytes("A4:C1:37:04:2D:BE"), Some(MAC_A));
        assert_eq!(mac_bytes("10:a5:62:32:75:36"), Some(MAC_B));
        for bad in [
            "",
            "A4:C1:37:04:2D",
            "A4:C1:37:04:2D:BE:00",
            "A4:C1:37:04:2D:B",
            "A4-C1-37-04-2D-BE",
            "G4:C1:37:04:2D:BE",
        ] {
            assert_eq!(mac_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_password_is_six_letters_or_digits_and_never_shown() {
        for ok in ["123456", "000000", "abCD12"] {
            assert_eq!(Password::parse(ok).unwrap().bytes(), ok.as_bytes());
        }
        for bad in ["", "12345", "1234567", "12345!", "12 456", "12345é"] {
            let e = Password::parse(bad).unwrap_err();
            assert!(e.contains("exactly 6 letters or digits"), "{bad:?}: {e}");
        }
        let p = Password::parse("123456").unwrap();
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
    }

    proptest! {
        #![proptest_config(crate::devices::protocol::proptest_config())]

        /// Any notification: parsing never panics, and an answer is only ever read from a
        /// frame that encodes back to the same bytes.
        #[test]
        fn fuzz_auth_answers(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
            if let Some(a) = parse_answer(&bytes) {
                let mut again = START.to_vec();
                again.extend([a.command, 1, a.value, checksum(a.command, &[a.value])]);
                prop_assert_eq!(again, bytes);
            }
        }

        /// Encryption is undone by the BMS's inverse for any address, byte and secret.
        #[test]
        fn encryption_inverts(mac in any::<[u8; 6]>(), random in any::<u8>(),
                              secret in prop::collection::vec(any::<u8>(), 0..16)) {
            let enc = encrypt(mac, random, &secret);
            let back: Vec<u8> = enc
                .iter()
                .enumerate()
                .map(|(i, e)| e.wrapping_sub(random) ^ mac.get(i).copied().unwrap_or(0))
                .collect();
            prop_assert_eq!(back, secret);
        }
    }
}
