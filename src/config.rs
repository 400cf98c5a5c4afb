//! Configuration: a TOML file and/or `--jbd NAME=MAC` / `--powermon NAME=MAC` flags, validated
//! into a list of [`DeviceSpec`]. Every error names the file, line and key, and says the fix.
//!
//! There is deliberately no option that writes to a device (MOSFET control, settings):
//! blebatt is read-only, and unknown keys are rejected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::device::DeviceSpec;
use crate::reading::DeviceKind;

/// Default bound on each reply and BlueZ call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    device: Vec<Spanned<FileDevice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevice {
    name: Spanned<String>,
    kind: DeviceKind,
    address: Spanned<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    adapter: Option<String>,
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

/// Parses `NAME=MAC` from the command line.
pub fn parse_cli_device(
    kind: DeviceKind,
    arg: &str,
    timeout: Duration,
) -> Result<DeviceSpec, ConfigError> {
    let flag = format!("--{kind}");
    let err = |message: String| ConfigError {
        location: format!("{flag} {arg}"),
        message,
    };
    let (name, mac) = arg.split_once('=').ok_or_else(|| {
        err(format!(
            "expected NAME=MAC, e.g. {flag} house=A4:C1:38:12:34:56"
        ))
    })?;
    let name = name.trim();
    if name.is_empty() {
        return Err(err("the name before '=' is empty".into()));
    }
    let address = normalize_mac(mac).ok_or_else(|| {
        err(format!(
            "{mac:?} is not a Bluetooth address; use six hex pairs like A4:C1:38:12:34:56 (`blebatt scan` lists them)"
        ))
    })?;
    Ok(DeviceSpec {
        name: name.to_string(),
        kind,
        address,
        timeout,
        adapter: None,
    })
}

/// Reads and validates a TOML config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        location: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    parse_str(&text, path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => format!("{} line {}", path.display(), line_of(text, span.start)),
            None => path.display().to_string(),
        };
        let message = e.message().to_string();
        let fix = if message.contains("unknown field") {
            " (fix: remove or correct the key; the allowed keys are in telegraf.d/blebatt.example.toml; blebatt has no options that write to a device)"
        } else if message.contains("missing field") {
            " (fix: every [[device]] needs name, kind and address)"
        } else if message.contains("unknown variant") {
            " (fix: kind is \"jbd\" or \"powermon\")"
        } else {
            ""
        };
        ConfigError {
            location,
            message: format!("{message}{fix}"),
        }
    })?;
    let timeout = file.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut devices: Vec<DeviceSpec> = Vec::new();
    for dev in &file.device {
        let d = dev.get_ref();
        let at = |span: std::ops::Range<usize>| {
            format!("{} line {}", path.display(), line_of(text, span.start))
        };
        let name = d.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(ConfigError {
                location: at(d.name.span()),
                message: "device name is empty (fix: give each device a short name, e.g. name = \"house\")".into(),
            });
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
        devices.push(DeviceSpec {
            name,
            kind: d.kind,
            address,
            timeout: d.timeout.unwrap_or(timeout),
            adapter: d.adapter.clone(),
        });
    }
    if file.interval.is_some_and(|i| i.is_zero()) {
        return Err(ConfigError {
            location: path.display().to_string(),
            message: "interval must be more than zero (fix: e.g. interval = \"10s\", or remove it to poll on Telegraf's ticks)".into(),
        });
    }
    Ok(Config {
        devices,
        interval: file.interval,
    })
}

/// Where devices come from: file, flags, or the demo.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config: Option<PathBuf>,
    pub jbd: Vec<String>,
    pub powermon: Vec<String>,
    pub timeout: Option<Duration>,
}

/// Merges the config file (if any) and the command-line devices; refuses duplicates.
pub fn resolve(src: &Sources) -> Result<Config, ConfigError> {
    let mut cfg = match &src.config {
        Some(path) => load_file(path)?,
        None => Config {
            devices: Vec::new(),
            interval: None,
        },
    };
    if let Some(t) = src.timeout {
        for d in &mut cfg.devices {
            d.timeout = t;
        }
    }
    let timeout = src.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let flags = src
        .jbd
        .iter()
        .map(|a| (DeviceKind::Jbd, a))
        .chain(src.powermon.iter().map(|a| (DeviceKind::Powermon, a)));
    for (kind, arg) in flags {
        let spec = parse_cli_device(kind, arg, timeout)?;
        if cfg
            .devices
            .iter()
            .any(|d| d.name == spec.name || d.address == spec.address)
        {
            return Err(ConfigError {
                location: format!("--{kind} {arg}"),
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
        assert_eq!(c.devices[1].kind, DeviceKind::Powermon);
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
        assert!(e.message.contains("kind is \"jbd\" or \"powermon\""), "{e}");
        assert_eq!(e.location, "blebatt.toml line 3");
    }

    #[test]
    fn bad_duration_and_zero_interval() {
        assert!(parse("timeout = \"soon\"\n").is_err());
        let e = parse("interval = \"0s\"\n").unwrap_err();
        assert!(e.message.contains("more than zero"), "{e}");
    }

    #[test]
    fn cli_devices() {
        let d =
            parse_cli_device(DeviceKind::Jbd, "van=a4:c1:38:00:00:01", DEFAULT_TIMEOUT).unwrap();
        assert_eq!(
            (d.name.as_str(), d.address.as_str()),
            ("van", "A4:C1:38:00:00:01")
        );
        assert!(parse_cli_device(DeviceKind::Jbd, "van", DEFAULT_TIMEOUT).is_err());
        assert!(parse_cli_device(DeviceKind::Jbd, "=A4:C1:38:00:00:01", DEFAULT_TIMEOUT).is_err());
        assert!(
            parse_cli_device(DeviceKind::Powermon, "x=zz:c1:38:00:00:01", DEFAULT_TIMEOUT).is_err()
        );
        let src = Sources {
            jbd: vec!["a=A4:C1:38:00:00:01".into(), "a=A4:C1:38:00:00:02".into()],
            ..Default::default()
        };
        assert!(resolve(&src).is_err());
    }
}
