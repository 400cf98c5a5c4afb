//! Configuration: a TOML file and/or `--device KIND:NAME=MAC` (or a kind's own flag, `--jbd
//! NAME=MAC`, `--powermon NAME=MAC`) flags, validated
//! into a list of [`DeviceSpec`]. Every error names the file, line and key, and says the fix.
//!
//! There is deliberately no option that writes to a device (MOSFET control, settings):
//! blebatt is read-only, and unknown keys are rejected.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::device::DeviceSpec;
use crate::devices::{self, Kind};
use crate::secret::{Passkey, Secret};

/// Default bound on each reply and BlueZ call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest `timeout`: a JBD reply spans several BLE connection intervals (7.5 ms to 4 s
/// each); below this no reply can arrive and every poll would fail.
pub const TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// Longest `timeout`: a longer one is a typo, and must not overflow a deadline.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(10 * 60);
/// Longest `interval` (a longer one is a typo, and must not overflow a timer).
pub const INTERVAL_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Largest configuration file read; a bigger one is not a blebatt configuration.
pub const FILE_MAX_BYTES: u64 = 1 << 20;

/// Checks a `timeout` (file key or `--timeout`); the error says the fix.
pub fn check_timeout(t: Duration) -> Result<Duration, String> {
    if t < TIMEOUT_MIN || t > TIMEOUT_MAX {
        return Err(format!(
            "timeout {} is out of range (fix: between {} and {}; the default is {})",
            humantime::format_duration(t),
            humantime::format_duration(TIMEOUT_MIN),
            humantime::format_duration(TIMEOUT_MAX),
            humantime::format_duration(DEFAULT_TIMEOUT),
        ));
    }
    Ok(t)
}

/// Checks an `interval` (file key or `--interval`); the error says the fix.
pub fn check_interval(i: Duration) -> Result<Duration, String> {
    if i.is_zero() || i > INTERVAL_MAX {
        return Err(format!(
            "interval {} is out of range (fix: more than zero and at most {}, e.g. \"10s\"; or leave it out to poll on Telegraf's ticks)",
            humantime::format_duration(i),
            humantime::format_duration(INTERVAL_MAX),
        ));
    }
    Ok(i)
}

/// clap value parser for `--timeout`.
pub fn parse_timeout_flag(text: &str) -> Result<Duration, String> {
    check_timeout(humantime::parse_duration(text).map_err(|e| e.to_string())?)
}

/// clap value parser for `--interval`.
pub fn parse_interval_flag(text: &str) -> Result<Duration, String> {
    check_interval(humantime::parse_duration(text).map_err(|e| e.to_string())?)
}

/// Checks a device name (it becomes the `device` tag of every line). Returns it trimmed.
pub fn check_name(name: &str) -> Result<&str, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(
            "device name is empty (fix: give each device a short name, e.g. name = \"house\")"
                .into(),
        );
    }
    if name.chars().any(char::is_control) {
        // A newline would end the line-protocol line inside the tag: a phantom measurement.
        return Err(format!(
            "device name {name:?} contains a control character such as a newline or tab (fix: letters, digits, spaces and punctuation only)"
        ));
    }
    Ok(name)
}

/// Checks an adapter name: BlueZ calls its adapters hci0, hci1 ...
pub fn check_adapter(name: &str) -> Result<(), String> {
    let digits = name.strip_prefix("hci").unwrap_or("");
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "adapter {name:?} is not a BlueZ adapter name (fix: hci0, hci1 ...; `bluetoothctl list` shows them, or leave adapter out to use the first one)"
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    /// Where the energy counters' state is kept (`run`).
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    device: Vec<Spanned<FileDevice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevice {
    name: Spanned<String>,
    kind: KindName,
    address: Spanned<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    adapter: Option<String>,
    /// The device's app password (kinds that have one: JBD). A secret.
    #[serde(default)]
    password: Option<Spanned<PasswordText>>,
    /// The BLE pairing passkey: `123456` or `"123456"`. A secret.
    #[serde(default)]
    passkey: Option<Spanned<PasskeyText>>,
    /// The key the device's data is encrypted with (kinds that need one: Victron). A secret.
    #[serde(default)]
    key: Option<Spanned<KeyText>>,
}

/// A `key` as written: a string. Anything else is refused without echoing it.
#[derive(Debug)]
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        secret_string(
            d,
            "key: write it as a quoted string of 32 hex digits, e.g. key = \"0123456789abcdef0123456789abcdef\"",
        )
        .map(KeyText)
    }
}

/// A secret that must be a TOML string; anything else is refused with `message` alone (serde's
/// own message would quote the value).
fn secret_string<'de, D: serde::Deserializer<'de>>(
    d: D,
    message: &'static str,
) -> Result<String, D::Error> {
    match toml::Value::deserialize(d) {
        Ok(toml::Value::String(s)) => Ok(s),
        _ => Err(serde::de::Error::custom(message)),
    }
}

/// A `password` as written: a string. Anything else is refused without echoing it (serde's
/// own message would quote the value).
#[derive(Debug)]
struct PasswordText(String);

impl<'de> Deserialize<'de> for PasswordText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        secret_string(
            d,
            "password: write it as a quoted string, e.g. password = \"123456\"",
        )
        .map(PasswordText)
    }
}

/// A `passkey` as written: a number or a string of six digits.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PasskeyText {
    Number(i64),
    Text(String),
}

impl PasskeyText {
    fn parse(&self) -> Result<Passkey, String> {
        match self {
            PasskeyText::Number(n) => Passkey::from_number(*n),
            PasskeyText::Text(t) => Passkey::parse(t),
        }
    }
}

/// A `kind = "..."` value: a name in the registry ([`devices::KINDS`]).
#[derive(Debug, Clone, Copy)]
struct KindName(&'static Kind);

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        devices::by_name(&name)
            .map(KindName)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, devices::names()))
    }
}

/// `"jbd" or "powermon"`: the kinds, as a fix names them.
fn kinds_list() -> String {
    let names: Vec<String> = devices::names().iter().map(|n| format!("{n:?}")).collect();
    let list = names.join(", ");
    match list.rsplit_once(", ") {
        Some((head, last)) => format!("{head} or {last}"),
        None => list,
    }
}

/// One device given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFlag {
    /// The kind's name as given (checked against the registry when parsed).
    pub kind: String,
    /// `NAME=MAC`.
    pub name_mac: String,
    /// The flag as typed, for messages (`--jbd van=...`, `--device jbd:van=...`).
    pub shown: String,
}

impl DeviceFlag {
    /// A kind's own flag: `--<kind> NAME=MAC`.
    pub fn of_kind(kind: &str, name_mac: &str) -> Self {
        DeviceFlag {
            kind: kind.into(),
            name_mac: name_mac.into(),
            shown: format!("--{kind} {name_mac}"),
        }
    }

    /// `--device KIND:NAME=MAC`.
    pub fn generic(arg: &str) -> Self {
        let (kind, name_mac) = arg.split_once(':').unwrap_or(("", arg));
        DeviceFlag {
            kind: kind.trim().into(),
            name_mac: name_mac.into(),
            shown: format!("--device {arg}"),
        }
    }
}

/// A configuration problem: where it is and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub devices: Vec<DeviceSpec>,
    /// Own polling interval (`signal = "none"`); `None` = poll on stdin ticks.
    pub interval: Option<Duration>,
    /// `state_dir`: where `run` keeps the energy counters' state.
    pub state_dir: Option<PathBuf>,
}

/// Normalises a Bluetooth address to `AA:BB:CC:DD:EE:FF`; accepts `-` separators and lower case.
pub fn normalize_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_uppercase())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a device flag from the command line.
pub fn parse_cli_device(flag: &DeviceFlag, timeout: Duration) -> Result<DeviceSpec, ConfigError> {
    let err = |message: String| ConfigError {
        location: flag.shown.clone(),
        message,
    };
    let kind = devices::by_name(&flag.kind).ok_or_else(|| {
        err(format!(
            "expected KIND:NAME=MAC with KIND {}, e.g. --device {}:house=A4:C1:38:12:34:56",
            kinds_list(),
            devices::names()[0]
        ))
    })?;
    let (name, mac) = flag.name_mac.split_once('=').ok_or_else(|| {
        let example = flag.shown.strip_suffix(&flag.name_mac).unwrap_or("");
        err(format!(
            "expected NAME=MAC, e.g. {example}house=A4:C1:38:12:34:56"
        ))
    })?;
    let name = check_name(name).map_err(err)?;
    let address = normalize_mac(mac).ok_or_else(|| {
        err(format!(
            "{mac:?} is not a Bluetooth address; use six hex pairs like A4:C1:38:12:34:56 (`blebatt scan` lists them)"
        ))
    })?;
    if kind.key.is_some() {
        return Err(err(format!(
            "{kind} devices need their key, a secret, which the command line would show to every user (fix: configure this device in a [[device]] table with key = \"...\" in the --config file)"
        )));
    }
    Ok(DeviceSpec {
        name: name.to_string(),
        kind,
        address,
        timeout,
        adapter: None,
        password: None,
        passkey: None,
        key: None,
    })
}

/// Reads and validates a TOML config file.
/// Reads at most [`FILE_MAX_BYTES`] of it: a huge file is refused, never buffered whole.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let err = |message: String| ConfigError {
        location: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    (&file)
        .take(FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > FILE_MAX_BYTES {
        return Err(err(format!(
            "larger than {} KiB: not a blebatt configuration (fix: check the path; telegraf.d/blebatt.example.toml is a few hundred bytes)",
            FILE_MAX_BYTES / 1024
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| err("not UTF-8 text (fix: save it as UTF-8 TOML)".into()))?;
    let cfg = parse_str(&text, path)?;
    let mode = file
        .metadata()
        .map_err(|e| err(format!("cannot read: {e}")))?
        .permissions()
        .mode();
    check_secrets_private(&cfg, mode).map_err(err)?;
    Ok(cfg)
}

/// Permission bit: readable by every user.
const OTHERS_READ: u32 = 0o004;

/// A file holding a password, passkey or key must not be readable by every user of the machine.
/// Group-readable is fine: Telegraf reads it through its group.
fn check_secrets_private(cfg: &Config, mode: u32) -> Result<(), String> {
    let holds_secrets = cfg
        .devices
        .iter()
        .any(|d| d.password.is_some() || d.passkey.is_some() || d.key.is_some());
    if holds_secrets && mode & OTHERS_READ != 0 {
        return Err(format!(
            "holds a password, passkey or key and is readable by every user (mode {:03o}) (fix: `chmod 640` it, and `chgrp telegraf` it when Telegraf runs blebatt)",
            mode & 0o777
        ));
    }
    Ok(())
}

/// For `config check`: the file alone must configure at least one device.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    let cfg = load_file(path)?;
    if cfg.devices.is_empty() {
        return Err(ConfigError {
            location: path.display().to_string(),
            message: "no devices (fix: add a [[device]] with name, kind and address; see telegraf.d/blebatt.example.toml)".into(),
        });
    }
    Ok(cfg)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => format!("{} line {}", path.display(), line_of(text, span.start)),
            None => path.display().to_string(),
        };
        let message = e.message().to_string();
        let kind_fix = format!(" (fix: kind is {})", kinds_list());
        let fix = if message.contains("unknown field") {
            " (fix: remove or correct the key; the allowed keys are in telegraf.d/blebatt.example.toml; blebatt has no options that write to a device)"
        } else if message.contains("missing field") {
            " (fix: every [[device]] needs name, kind and address)"
        } else if message.contains("unknown variant") {
            &kind_fix
        } else {
            ""
        };
        ConfigError {
            location,
            message: format!("{message}{fix}"),
        }
    })?;
    // Spans of top-level keys are not kept by serde; they are found by their text.
    let key_at = |key: &str| {
        let line = text
            .lines()
            .position(|l| l.trim_start().starts_with(key))
            .map(|i| format!(" line {}", i + 1))
            .unwrap_or_default();
        format!("{}{line}", path.display())
    };
    let timeout = match file.timeout {
        Some(t) => check_timeout(t).map_err(|message| ConfigError {
            location: key_at("timeout"),
            message,
        })?,
        None => DEFAULT_TIMEOUT,
    };
    if let Some(i) = file.interval {
        check_interval(i).map_err(|message| ConfigError {
            location: key_at("interval"),
            message,
        })?;
    }
    let mut devices: Vec<DeviceSpec> = Vec::new();
    for dev in &file.device {
        let d = dev.get_ref();
        let at = |span: std::ops::Range<usize>| {
            format!("{} line {}", path.display(), line_of(text, span.start))
        };
        let name = check_name(d.name.get_ref())
            .map_err(|message| ConfigError {
                location: at(d.name.span()),
                message,
            })?
            .to_string();
        let device_at = at(dev.span());
        let timeout = match d.timeout {
            Some(t) => check_timeout(t).map_err(|message| ConfigError {
                location: format!("{device_at} (device {name:?})"),
                message,
            })?,
            None => timeout,
        };
        if let Some(a) = &d.adapter {
            check_adapter(a).map_err(|message| ConfigError {
                location: format!("{device_at} (device {name:?})"),
                message,
            })?;
        }
        if devices.iter().any(|x| x.name == name) {
            return Err(ConfigError {
                location: at(d.name.span()),
                message: format!(
                    "duplicate device name {name:?} (fix: names become the `device` tag and must be unique)"
                ),
            });
        }
        let address = normalize_mac(d.address.get_ref()).ok_or_else(|| ConfigError {
            location: at(d.address.span()),
            message: format!(
                "address {:?} is not a Bluetooth address (fix: six hex pairs like \"A4:C1:38:12:34:56\"; `blebatt scan` lists nearby devices)",
                d.address.get_ref()
            ),
        })?;
        if let Some(other) = devices.iter().find(|x| x.address == address) {
            return Err(ConfigError {
                location: at(d.address.span()),
                message: format!(
                    "address {address} is already used by device {:?} (fix: one entry per device)",
                    other.name
                ),
            });
        }
        let kind = d.kind.0;
        // Secrets: the errors name the key and the line, never the value.
        let password = match &d.password {
            None => None,
            Some(p) => {
                let check = kind.password.ok_or_else(|| ConfigError {
                    location: at(p.span()),
                    message: format!(
                        "password: {kind} devices have no password (fix: remove the key)"
                    ),
                })?;
                check(&p.get_ref().0).map_err(|e| ConfigError {
                    location: at(p.span()),
                    message: format!("password: {e}"),
                })?;
                Some(Secret::new(p.get_ref().0.as_str()))
            }
        };
        let passkey = match &d.passkey {
            None => None,
            Some(p) if !kind.pairing => {
                return Err(ConfigError {
                    location: at(p.span()),
                    message: format!("passkey: {kind} devices do not pair (fix: remove the key)"),
                });
            }
            Some(p) => Some(p.get_ref().parse().map_err(|e| ConfigError {
                location: at(p.span()),
                message: format!("passkey: {e}"),
            })?),
        };
        let key = match (&d.key, kind.key) {
            (None, None) => None,
            (Some(k), None) => {
                return Err(ConfigError {
                    location: at(k.span()),
                    message: format!("key: {kind} devices have no key (fix: remove the key)"),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    location: at(d.name.span()),
                    message: format!(
                        "{kind} device {name:?} has no key: its data is encrypted (fix: add key = \"...\", the 32 hex digits VictronConnect shows under the device's Product info, Instant readout details, Show)"
                    ),
                });
            }
            (Some(k), Some(check)) => {
                check(&k.get_ref().0).map_err(|e| ConfigError {
                    location: at(k.span()),
                    message: format!("key: {e}"),
                })?;
                Some(Secret::new(k.get_ref().0.trim()))
            }
        };
        devices.push(DeviceSpec {
            name,
            kind,
            address,
            timeout,
            adapter: d.adapter.clone(),
            password,
            passkey,
            key,
        });
    }
    Ok(Config {
        devices,
        interval: file.interval,
        state_dir: file.state_dir,
    })
}

/// Where devices come from: file, flags, or the demo.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config: Option<PathBuf>,
    /// Devices from the command line, in order.
    pub devices: Vec<DeviceFlag>,
    pub timeout: Option<Duration>,
}

/// Merges the config file (if any) and the command-line devices; refuses duplicates.
pub fn resolve(src: &Sources) -> Result<Config, ConfigError> {
    let mut cfg = match &src.config {
        Some(path) => load_file(path)?,
        None => Config {
            devices: Vec::new(),
            interval: None,
            state_dir: None,
        },
    };
    if let Some(t) = src.timeout {
        check_timeout(t).map_err(|message| ConfigError {
            location: "--timeout".into(),
            message,
        })?;
        for d in &mut cfg.devices {
            d.timeout = t;
        }
    }
    let timeout = src.timeout.unwrap_or(DEFAULT_TIMEOUT);
    for flag in &src.devices {
        let spec = parse_cli_device(flag, timeout)?;
        if cfg
            .devices
            .iter()
            .any(|d| d.name == spec.name || d.address == spec.address)
        {
            return Err(ConfigError {
                location: flag.shown.clone(),
                message: "a device with this name or address is already configured (fix: one entry per device, unique names)".into(),
            });
        }
        cfg.devices.push(spec);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new("blebatt.toml"))
    }

    const GOOD: &str = r#"
interval = "10s"
timeout = "4s"

[[device]]
name = "house"
kind = "jbd"
address = "a4:c1:38:12:34:56"

[[device]]
name = "solar"
kind = "powermon"
address = "C0-11-22-33-44-55"
timeout = "8s"
adapter = "hci1"
"#;

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.interval, Some(Duration::from_secs(10)));
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.devices[0].address, "A4:C1:38:12:34:56");
        assert_eq!(c.devices[0].timeout, Duration::from_secs(4));
        assert_eq!(c.devices[1].kind, &crate::devices::powermon::KIND);
        assert_eq!(c.devices[1].address, "C0:11:22:33:44:55");
        assert_eq!(c.devices[1].timeout, Duration::from_secs(8));
        assert_eq!(c.devices[1].adapter.as_deref(), Some("hci1"));
    }

    #[test]
    fn unknown_key_names_line_and_fix() {
        let text = GOOD.replace("adapter = \"hci1\"", "mosfet_control = true");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.location, "blebatt.toml line 15");
        assert!(e.message.contains("unknown field `mosfet_control`"), "{e}");
        assert!(
            e.message.contains("no options that write to a device"),
            "{e}"
        );
    }

    #[test]
    fn bad_mac_names_line() {
        let e = parse(&GOOD.replace("a4:c1:38:12:34:56", "a4:c1:38:12:34")).unwrap_err();
        assert_eq!(e.location, "blebatt.toml line 8");
        assert!(e.message.contains("not a Bluetooth address"), "{e}");
    }

    #[test]
    fn duplicate_name_names_line() {
        let e = parse(&GOOD.replace("name = \"solar\"", "name = \"house\"")).unwrap_err();
        assert_eq!(e.location, "blebatt.toml line 11");
        assert!(e.message.contains("duplicate device name \"house\""), "{e}");
    }

    #[test]
    fn duplicate_address_is_refused() {
        let e = parse(&GOOD.replace("C0-11-22-33-44-55", "A4:C1:38:12:34:56")).unwrap_err();
        assert!(
            e.message.contains("already used by device \"house\""),
            "{e}"
        );
    }

    #[test]
    fn missing_field_and_bad_kind() {
        let e = parse("[[device]]\nname = \"x\"\nkind = \"jbd\"\n").unwrap_err();
        assert!(e.message.contains("missing field `address`"), "{e}");
        assert!(e.location.starts_with("blebatt.toml line 1"), "{e}");
        let e =
            parse("[[device]]\nname = \"x\"\nkind = \"daly\"\naddress = \"A4:C1:38:12:34:56\"\n")
                .unwrap_err();
        assert!(
            e.message
                .contains("kind is \"jbd\", \"powermon\", \"jk\" or \"victron\""),
            "{e}"
        );
        assert_eq!(e.location, "blebatt.toml line 3");
    }

    #[test]
    fn bad_duration_and_zero_interval() {
        assert!(parse("timeout = \"soon\"\n").is_err());
        let e = parse("interval = \"0s\"\n").unwrap_err();
        assert!(e.message.contains("more than zero"), "{e}");
        assert_eq!(e.location, "blebatt.toml line 1");
    }

    #[test]
    fn a_name_with_a_newline_or_control_character_is_refused_with_its_line() {
        for bad in ["house\\nbatt", "house\\rx", "tab\\there", "bell\\u0007"] {
            let e =
                parse(&GOOD.replace("name = \"house\"", &format!("name = \"{bad}\""))).unwrap_err();
            assert_eq!(e.location, "blebatt.toml line 6", "{bad}");
            assert!(e.message.contains("control character"), "{e}");
        }
        let e = parse_cli_device(
            &DeviceFlag::of_kind("jbd", "a\nb=A4:C1:38:00:00:01"),
            DEFAULT_TIMEOUT,
        )
        .unwrap_err();
        assert!(e.message.contains("control character"), "{e}");
        // Spaces, commas and '=' are fine: line protocol escapes them.
        let ok = parse(&GOOD.replace("name = \"house\"", "name = \"house, aft=1\"")).unwrap();
        assert_eq!(ok.devices[0].name, "house, aft=1");
    }

    #[test]
    fn timeouts_out_of_range_are_refused_naming_the_key() {
        for bad in ["0s", "50ms", "11m", "100years"] {
            let e = parse(&format!("timeout = \"{bad}\"\n")).unwrap_err();
            assert_eq!(e.location, "blebatt.toml line 1", "{bad}");
            assert!(
                e.message.contains("timeout") && e.message.contains("fix"),
                "{e}"
            );
            let e = parse(&GOOD.replace("timeout = \"8s\"", &format!("timeout = \"{bad}\"")))
                .unwrap_err();
            assert!(e.location.contains("(device \"solar\")"), "{e}");
        }
        assert_eq!(check_timeout(TIMEOUT_MIN), Ok(TIMEOUT_MIN));
        assert_eq!(check_timeout(TIMEOUT_MAX), Ok(TIMEOUT_MAX));
        // The documented window, 100 ms ..= 10 min, to the millisecond.
        let ms = Duration::from_millis;
        assert!(check_timeout(ms(99)).is_err());
        assert_eq!(check_timeout(ms(100)), Ok(ms(100)));
        assert_eq!(check_timeout(ms(600_000)), Ok(ms(600_000)));
        assert!(check_timeout(ms(600_001)).is_err());
        assert!(parse_timeout_flag("0s").is_err());
        assert!(parse_timeout_flag("soon").is_err());
        assert_eq!(parse_timeout_flag("800ms"), Ok(Duration::from_millis(800)));
        let src = Sources {
            devices: vec![jbd("a=A4:C1:38:00:00:01")],
            timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(resolve(&src).unwrap_err().location, "--timeout");
    }

    #[test]
    fn intervals_out_of_range_are_refused() {
        assert!(parse("interval = \"25h\"\n").is_err());
        assert_eq!(check_interval(INTERVAL_MAX), Ok(INTERVAL_MAX));
        // The documented bound, 24 h, to the second.
        assert!(parse("interval = \"24h\"\n").is_ok());
        assert!(parse("interval = \"24h 1s\"\n").is_err());
        assert!(parse_interval_flag("0s").is_err());
        assert!(parse_interval_flag("1000years").is_err());
        assert_eq!(parse_interval_flag("10s"), Ok(Duration::from_secs(10)));
    }

    const SECRETS: &str = r#"
[[device]]
name = "house"
kind = "jbd"
address = "A4:C1:38:12:34:56"
password = "a1B2c3"

[[device]]
name = "garage"
kind = "jbd"
address = "A4:C1:38:12:34:57"
passkey = 012345

[[device]]
name = "shed"
kind = "jbd"
address = "A4:C1:38:12:34:58"
passkey = "012345"
"#;

    #[test]
    fn passwords_and_passkeys_are_read_and_never_shown() {
        // TOML has no leading zeros in integers: 012345 is refused by TOML itself.
        assert!(parse(SECRETS).is_err());
        let c = parse(&SECRETS.replace("passkey = 012345", "passkey = 12345")).unwrap();
        assert_eq!(c.devices[0].password.as_ref().unwrap().expose(), "a1B2c3");
        assert_eq!(c.devices[0].passkey, None);
        assert_eq!(c.devices[1].passkey.unwrap().value(), 12_345);
        assert_eq!(c.devices[2].passkey.unwrap().value(), 12_345);
        assert_eq!(c.devices[1].password, None);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("a1B2c3") && !shown.contains("12345"),
            "{shown}"
        );
    }

    #[test]
    fn bad_secrets_are_refused_naming_the_key_and_line_but_not_the_value() {
        let good = SECRETS.replace("passkey = 012345", "passkey = 12345");
        for (from, to, line, says) in [
            (
                "\"a1B2c3\"",
                "\"a1B2c\"",
                6,
                "password: a JBD Bluetooth password is exactly 6",
            ),
            ("\"a1B2c3\"", "\"a1B2c3!\"", 6, "password:"),
            ("\"a1B2c3\"", "\"a1B2-3\"", 6, "password:"),
            (
                "passkey = 12345",
                "passkey = 1234567",
                12,
                "passkey: a passkey is six digits",
            ),
            (
                "passkey = \"012345\"",
                "passkey = \"12345x\"",
                18,
                "passkey: a passkey is six digits",
            ),
        ] {
            let text = good.replace(from, to);
            let e = parse(&text).unwrap_err();
            assert_eq!(e.location, format!("blebatt.toml line {line}"), "{to}: {e}");
            assert!(e.message.starts_with(says), "{to}: {e}");
            let value = to.split('=').next_back().unwrap().trim().trim_matches('"');
            assert!(!e.to_string().contains(value), "{e}");
        }
    }

    #[test]
    fn kinds_without_a_password_or_pairing_refuse_those_keys() {
        let pm = "[[device]]\nname = \"s\"\nkind = \"powermon\"\naddress = \"C0:11:22:33:44:55\"\n";
        let e = parse(&format!("{pm}password = \"123456\"\n")).unwrap_err();
        assert_eq!(e.location, "blebatt.toml line 5");
        assert!(
            e.message.contains("powermon devices have no password"),
            "{e}"
        );
        let e = parse(&format!("{pm}passkey = 123456\n")).unwrap_err();
        assert!(e.message.contains("powermon devices do not pair"), "{e}");
    }

    #[test]
    fn secrets_of_the_wrong_type_are_refused_without_their_value() {
        let dev = "[[device]]\nname = \"h\"\nkind = \"jbd\"\naddress = \"A4:C1:38:12:34:56\"\n";
        for (line, says) in [
            ("password = 246813", "write it as a quoted string"),
            ("password = [\"246813\"]", "write it as a quoted string"),
            (
                "key = 246813",
                "write it as a quoted string of 32 hex digits",
            ),
            (
                "key = [\"246813\"]",
                "write it as a quoted string of 32 hex digits",
            ),
            ("passkey = 246.813", ""),
            ("passkey = true", ""),
            ("passkey = 024681", ""),
        ] {
            let e = parse(&format!("{dev}{line}\n")).unwrap_err();
            assert_eq!(e.location, "blebatt.toml line 5", "{line}: {e}");
            assert!(e.message.contains(says), "{line}: {e}");
            for secret in ["246813", "246.813", "24681"] {
                assert!(!e.message.contains(secret), "{line}: {e}");
            }
        }
    }

    #[test]
    fn a_file_holding_secrets_must_not_be_readable_by_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blebatt.toml");
        std::fs::write(
            &path,
            SECRETS.replace("passkey = 012345", "passkey = 12345"),
        )
        .unwrap();
        let chmod =
            |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        chmod(0o644);
        let e = load_file(&path).unwrap_err();
        assert!(
            e.message.contains("readable by every user (mode 644)"),
            "{e}"
        );
        assert!(e.message.contains("chmod 640"), "{e}");
        for private in [0o640, 0o600, 0o660, 0o440] {
            chmod(private);
            assert!(load_file(&path).is_ok(), "{private:o}");
        }
        // Without secrets, a world-readable file is fine.
        std::fs::write(&path, GOOD).unwrap();
        chmod(0o644);
        assert!(load_file(&path).is_ok());
    }

    #[test]
    fn the_example_configuration_parses_and_so_do_its_commented_keys() {
        let example = include_str!("../telegraf.d/blebatt.example.toml");
        let c = parse(example).unwrap();
        assert_eq!(c.devices.len(), 2);
        // Every commented-out `key = value` and table header, uncommented (a line is one when
        // it parses as TOML by itself).
        let uncommented: String = example
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest == "[[device]]"
                        || (rest.contains(" = ")
                            && toml::from_str::<toml::Table>(rest).is_ok()) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&uncommented).unwrap();
        assert_eq!(c.interval, Some(Duration::from_secs(10)));
        assert_eq!(c.state_dir.as_deref(), Some(Path::new("/var/lib/blebatt")));
        let starter = &c.devices[2];
        assert_eq!(starter.name, "starter");
        assert_eq!(
            starter.password.as_ref().map(Secret::expose),
            Some("123456")
        );
        assert_eq!(starter.passkey.map(Passkey::value), Some(123_456));
    }

    #[test]
    fn adapter_names_are_bluez_names() {
        for good in ["hci0", "hci1", "hci12"] {
            assert_eq!(check_adapter(good), Ok(()));
        }
        for bad in ["hci", "usb0", "hci0\n", "hcix", ""] {
            assert!(check_adapter(bad).is_err(), "{bad:?}");
        }
        let e = parse(&GOOD.replace("adapter = \"hci1\"", "adapter = \"bt1\"")).unwrap_err();
        assert!(e.message.contains("not a BlueZ adapter name"), "{e}");
    }

    #[test]
    fn config_check_needs_a_device_and_a_small_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "interval = \"10s\"\n").unwrap();
        let e = check_file(&empty).unwrap_err();
        assert!(e.message.contains("no devices"), "{e}");
        // Devices may come from flags: `run --config` accepts the file.
        assert!(load_file(&empty).is_ok());

        let huge = dir.path().join("huge.toml");
        let mut text = GOOD.to_string();
        while text.len() as u64 <= FILE_MAX_BYTES {
            text.push_str("# padding padding padding padding padding padding padding\n");
        }
        std::fs::write(&huge, &text).unwrap();
        let e = load_file(&huge).unwrap_err();
        assert!(e.message.contains("larger than 1024 KiB"), "{e}");
        // Exactly at the limit is still read.
        std::fs::write(&huge, &text[..FILE_MAX_BYTES as usize]).unwrap();
        assert!(load_file(&huge).is_ok());
    }

    #[test]
    fn cli_devices() {
        let d = parse_cli_device(
            &DeviceFlag::of_kind("jbd", "van=a4:c1:38:00:00:01"),
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            (d.name.as_str(), d.address.as_str()),
            ("van", "A4:C1:38:00:00:01")
        );
        assert!(parse_cli_device(&DeviceFlag::of_kind("jbd", "van"), DEFAULT_TIMEOUT).is_err());
        assert!(
            parse_cli_device(
                &DeviceFlag::of_kind("jbd", "=A4:C1:38:00:00:01"),
                DEFAULT_TIMEOUT
            )
            .is_err()
        );
        assert!(
            parse_cli_device(
                &DeviceFlag::of_kind("powermon", "x=zz:c1:38:00:00:01"),
                DEFAULT_TIMEOUT
            )
            .is_err()
        );
        let src = Sources {
            devices: vec![jbd("a=A4:C1:38:00:00:01"), jbd("a=A4:C1:38:00:00:02")],
            ..Default::default()
        };
        assert!(resolve(&src).is_err(), "one name twice");
        let src = Sources {
            devices: vec![
                jbd("a=A4:C1:38:00:00:01"),
                DeviceFlag::of_kind("powermon", "b=a4:c1:38:00:00:01"),
            ],
            ..Default::default()
        };
        let e = resolve(&src).unwrap_err();
        assert_eq!(
            e.location, "--powermon b=a4:c1:38:00:00:01",
            "one address twice"
        );
        let src = Sources {
            devices: vec![
                jbd("a=A4:C1:38:00:00:01"),
                DeviceFlag::generic("powermon:b=A4:C1:38:00:00:02"),
            ],
            ..Default::default()
        };
        let devices = resolve(&src).unwrap().devices;
        assert_eq!(
            devices.iter().map(|d| d.kind.name).collect::<Vec<_>>(),
            ["jbd", "powermon"]
        );
    }

    fn jbd(name_mac: &str) -> DeviceFlag {
        DeviceFlag::of_kind("jbd", name_mac)
    }

    #[test]
    fn the_device_flag_takes_any_registered_kind_and_names_them_when_wrong() {
        for kind in crate::devices::KINDS {
            let flag = DeviceFlag::generic(&format!("{}:van=a4:c1:38:00:00:01", kind.name));
            if kind.key.is_some() {
                // A key would be on the command line for every user to see.
                let e = parse_cli_device(&flag, DEFAULT_TIMEOUT).unwrap_err();
                assert!(
                    e.message
                        .contains("configure this device in a [[device]] table")
                );
                continue;
            }
            let d = parse_cli_device(&flag, DEFAULT_TIMEOUT).unwrap();
            assert_eq!(
                (d.kind, d.name.as_str(), d.address.as_str()),
                (*kind, "van", "A4:C1:38:00:00:01")
            );
        }
        for bad in [
            "daly:van=A4:C1:38:00:00:01",
            "van=A4:C1:38:00:00:01",
            ":van=A4:C1:38:00:00:01",
        ] {
            let e = parse_cli_device(&DeviceFlag::generic(bad), DEFAULT_TIMEOUT).unwrap_err();
            assert_eq!(e.location, format!("--device {bad}"));
            assert!(
                e.message
                    .contains("KIND \"jbd\", \"powermon\", \"jk\" or \"victron\""),
                "{e}"
            );
        }
        let e = parse_cli_device(&DeviceFlag::generic("jbd:van"), DEFAULT_TIMEOUT).unwrap_err();
        assert!(
            e.message
                .contains("expected NAME=MAC, e.g. --device jbd:house="),
            "{e}"
        );
        let e = parse_cli_device(&jbd("van"), DEFAULT_TIMEOUT).unwrap_err();
        assert!(e.message.contains("e.g. --jbd house="), "{e}");
    }
}
