//! The systemd files in systemd/: the Telegraf drop-in orders Telegraf after BlueZ, and the
//! stand-alone unit stays hardened (`systemd-analyze security` exposure at most 2.0).

use std::path::Path;
use std::process::Command;

const UNIT: &str = "systemd/blebatt.service";
const DROP_IN: &str = "systemd/telegraf.service.d/blebatt.conf";
/// The exposure `systemd-analyze security` may give the stand-alone unit, at most.
const MAX_EXPOSURE: f64 = 2.0;

/// The `key=value` settings of one `[section]` of a unit file, comments skipped.
fn settings(file: &str, section: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else if current == section {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{file}: not key=value: {line}"));
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn has(settings: &[(String, String)], key: &str, value: &str) -> bool {
    settings
        .iter()
        .any(|(k, v)| k == key && v.split_whitespace().any(|w| w == value))
}

#[test]
fn the_telegraf_drop_in_starts_telegraf_after_bluez_with_the_bluetooth_group() {
    let unit = settings(DROP_IN, "Unit");
    assert!(has(&unit, "After", "bluetooth.service"), "{unit:?}");
    assert!(has(&unit, "Wants", "bluetooth.service"), "{unit:?}");
    let service = settings(DROP_IN, "Service");
    assert!(
        has(&service, "SupplementaryGroups", "bluetooth"),
        "{service:?}"
    );
    // The energy counters' state directory, for the telegraf user.
    assert!(has(&service, "StateDirectory", "blebatt"), "{service:?}");
}

#[test]
fn the_stand_alone_unit_starts_after_bluez() {
    let unit = settings(UNIT, "Unit");
    assert!(has(&unit, "After", "bluetooth.service"), "{unit:?}");
}

#[test]
fn the_stand_alone_unit_reads_its_config_as_a_credential() {
    // The throw-away user could not read a 640 root:telegraf file holding a password.
    let service = settings(UNIT, "Service");
    assert!(
        has(
            &service,
            "LoadCredential",
            "blebatt.toml:/etc/blebatt/blebatt.toml"
        ),
        "{service:?}"
    );
    let exec = service
        .iter()
        .find(|(k, _)| k == "ExecStart")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    assert!(exec.contains("--config %d/blebatt.toml"), "{exec}");
    assert!(has(&service, "StateDirectory", "blebatt"), "{service:?}");
}

#[test]
#[ignore = "needs systemd-analyze (Debian package systemd); run by .ci/run"]
fn the_stand_alone_unit_is_hardened_to_an_exposure_of_at_most_2() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", UNIT])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("systemd-analyze (apt-get install -y systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for blebatt.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in systemd-analyze's output: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} > {MAX_EXPOSURE}"
    );
}
