//! The real binary, no radio: `decode`, `once --demo`, `run --demo` driven like Telegraf's
//! execd, and `config check`. Every stdout line must parse as line protocol.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;
use influxdb_line_protocol::FieldValue;

/// Real captured frames (patman15/BMS_BLE-HA tests/test_jbd_bms.py), as 20-byte notifications.
const INFO_CHUNK_1: &str = "dd 03 00 1d 06 18 fe e1 01 f2 01 f4 00 2a 2c 7c 00 00 00 00";
const INFO_CHUNK_2: &str = "00 00 80 64 03 04 03 0b 8b 0b 8a 0b 84 f8 84 77";
const CELLS: &str = "dd:04:00:08:0d:66:0d:61:0d:68:0d:59:fe:3c:77";
/// Old-firmware PowerMon record (mkjanke/ThornwavePy DCPMRead.py history).
const POWERMON_OLD: &str = "e0 ff 0f c8 47 04 4e 41 b7 09 dd 3c 97 ca 4e 3f 7a 6a 26 41 7c 01 0e 42 6c 7b 0f 00 00 00 00 00 6d 2e 01 00 00 00 00 00 ff 89 06 00 14 c1 e4 15 59 57 0b 42";

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run blebatt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn decode_jbd_real_notifications() {
    let (code, out, err) = run(&["decode", "jbd", INFO_CHUNK_1, INFO_CHUNK_2, CELLS]);
    assert_eq!(code, 0, "{err}");
    let lines = parse_all(&out);
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l.series.measurement.as_str(), "jbd_bms");
    assert_eq!(tag(l, "device").as_deref(), Some("decoded"));
    assert_eq!(field(l, "voltage"), &FieldValue::F64(15.6));
    assert_eq!(field(l, "current"), &FieldValue::F64(-2.87));
    assert_eq!(field(l, "cycles"), &FieldValue::I64(42));
    assert_eq!(field(l, "cell_2"), &FieldValue::F64(3.425));
    assert_eq!(field(l, "temperature_2"), &FieldValue::F64(22.3));
    assert_log_prefixes(&err);
    // This capture's pack voltage is 1.9 V from the sum of its cells: printed, and said.
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("W! pack voltage 15.60 V"))
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn decode_jbd_leaves_out_an_ntc_at_raw_0_and_says_so() {
    // The same 0x03 reply with NTC 2 raw 0 (-273.1 degC), re-checksummed.
    let info = "dd 03 00 1d 06 18 fe e1 01 f2 01 f4 00 2a 2c 7c 00 00 00 00 00 00 80 64 03 04 03 0b 8b 00 00 0b 84 f9 19 77";
    let (code, out, err) = run(&["decode", "jbd", info, CELLS]);
    assert_eq!(code, 0, "{err}");
    let l = &parse_all(&out)[0];
    assert!(
        l.field_set
            .iter()
            .all(|(k, _)| k.as_str() != "temperature_2"),
        "{out}"
    );
    assert_eq!(field(l, "temperature_3"), &FieldValue::F64(21.7));
    assert!(
        err.contains("W! NTC temperature (0.1 K) 2 omitted: raw 0"),
        "{err}"
    );
}

#[test]
fn decode_jbd_bad_checksum_exits_2_with_one_clear_line() {
    let bad = INFO_CHUNK_2.replace("f8 84 77", "f8 83 77");
    let (code, out, err) = run(&["decode", "jbd", INFO_CHUNK_1, &bad, CELLS]);
    assert_eq!(code, 2);
    assert_eq!(out, "", "nothing on stdout");
    assert_eq!(
        err.trim_end(),
        "E! checksum mismatch in 0x03 reply: expected 0xF884, got 0xF883"
    );
}

#[test]
fn decode_jbd_other_bad_inputs() {
    for (args, want) in [
        (vec![INFO_CHUNK_1], "incomplete frame"),
        (vec![CELLS], "no 0x03"),
        (vec!["zz"], "not a hex string"),
    ] {
        let mut full = vec!["decode", "jbd"];
        full.extend(args);
        let (code, out, err) = run(&full);
        assert_eq!(code, 2, "{full:?}");
        assert!(out.is_empty());
        assert!(err.starts_with("E! ") && err.contains(want), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn decode_powermon_real_record() {
    let (code, out, err) = run(&["decode", "powermon", POWERMON_OLD]);
    assert_eq!(code, 0, "{err}");
    let lines = parse_all(&out);
    let l = &lines[0];
    assert_eq!(l.series.measurement.as_str(), "powermon");
    assert_eq!(field(l, "soc"), &FieldValue::I64(100));
    assert_eq!(field(l, "coulomb_meter"), &FieldValue::F64(77.421));
    assert_eq!(field(l, "energy_meter"), &FieldValue::F64(1014.636));
    let (code, out, err) = run(&["decode", "powermon", "00 01 02"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("expected 52"), "{err}");
}

#[test]
fn every_kinds_decode_help_shows_real_captures_that_decode() {
    for kind in blebatt::devices::KINDS {
        let (code, help, err) = run(&["decode", kind.name, "--help"]);
        assert_eq!(code, 0, "{err}");
        for e in kind.decode.examples {
            let shown = blebatt::cli::example_args(kind, e);
            assert!(help.contains(&format!("blebatt decode {shown}")), "{help}");
            let mut argv = vec!["decode", kind.name];
            if let Some(key) = e.key {
                argv.extend(["--key", key]);
            }
            argv.extend(e.hex.iter());
            let (code, out, err) = run(&argv);
            assert_eq!(code, 0, "{err}");
            let lines = parse_all(&out);
            assert_eq!(lines.len(), 1, "{out}");
            assert_eq!(lines[0].series.measurement.as_str(), kind.measurement);
        }
    }
}

/// The demo's devices: two JBD packs, a PowerMon, a JK pack.
const DEMO_LINES: usize = 6;

/// Every field the schema promises for each demo device.
fn check_demo_lines(out: &str) {
    let lines = parse_all(out);
    let by_device = |d: &str| {
        lines
            .iter()
            .find(|l| tag(l, "device").as_deref() == Some(d))
            .unwrap_or_else(|| panic!("no line for {d}:\n{out}"))
    };
    for (dev, cells, ntcs) in [("demo-12v", 4, 2), ("demo-48v", 16, 4)] {
        let l = by_device(dev);
        assert_eq!(l.series.measurement.as_str(), "jbd_bms");
        assert!(tag(l, "address").is_some() && tag(l, "model").is_some());
        let mut want: Vec<String> = [
            "voltage",
            "current",
            "power",
            "remaining_capacity",
            "nominal_capacity",
            "soc",
            "cycles",
            "cell_count",
            "cell_min",
            "cell_max",
            "cell_avg",
            "cell_delta",
            "balancing",
            "charge_fet",
            "discharge_fet",
            "protection",
            "protection_cell_overvoltage",
            "protection_mosfet_software_lock",
            "software_version",
            "production_date",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        want.extend((1..=cells).map(|i| format!("cell_{i}")));
        want.extend((1..=ntcs).map(|i| format!("temperature_{i}")));
        for f in &want {
            field(l, f);
        }
        assert_eq!(field(l, "cell_count"), &FieldValue::I64(cells));
        assert!(
            l.field_set
                .iter()
                .all(|(k, _)| k.as_str() != format!("cell_{}", cells + 1))
        );
        assert!(matches!(field(l, "soc"), FieldValue::I64(0..=100)));
        assert!(l.timestamp.is_some());
    }
    let pm = by_device("demo-shunt");
    assert_eq!(pm.series.measurement.as_str(), "powermon");
    for f in [
        "voltage1",
        "voltage2",
        "current",
        "power",
        "temperature",
        "coulomb_meter",
        "energy_meter",
        "soc",
        "power_status",
    ] {
        field(pm, f);
    }
    let jk = by_device("demo-jk");
    assert_eq!(jk.series.measurement.as_str(), "jk_bms");
    assert_eq!(tag(jk, "model").as_deref(), Some("JK_B2A8S20P"));
    for f in [
        "voltage",
        "current",
        "soc",
        "soh",
        "cell_8",
        "cell_resistance_8",
        "temperature_2",
        "mos_temperature",
        "errors",
        "error_gps_remote_lock",
        "charged_energy",
    ] {
        field(jk, f);
    }
    let shunt = by_device("demo-smartshunt");
    assert_eq!(shunt.series.measurement.as_str(), "victron");
    assert_eq!(tag(shunt, "product_id").as_deref(), Some("0xA389"));
    assert_eq!(
        tag(shunt, "product").as_deref(),
        Some("SmartShunt 500A/50mV")
    );
    for f in [
        "voltage",
        "current",
        "power",
        "soc",
        "consumed_capacity",
        "temperature",
        "alarm",
        "alarm_bms_lockout",
        "charged_energy",
    ] {
        field(shunt, f);
    }
    let mppt = by_device("demo-mppt");
    assert_eq!(
        tag(mppt, "product").as_deref(),
        Some("SmartSolar Charger MPPT 75/15")
    );
    for f in [
        "voltage",
        "current",
        "charge_state",
        "pv_power",
        "yield_today",
    ] {
        field(mppt, f);
    }
    assert!(
        mppt.field_set
            .iter()
            .all(|(k, _)| !["load_current", "charged_energy"].contains(&k.as_str())),
        "no load output, and a charger is no battery"
    );
}

#[test]
fn once_demo_prints_every_field_for_every_demo_device() {
    let (code, out, err) = run(&["once", "--demo"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), DEMO_LINES, "{out}");
    check_demo_lines(&out);
    assert_log_prefixes(&err);
}

#[test]
fn once_without_devices_is_a_usage_error() {
    let (code, out, err) = run(&["once"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.starts_with("E! ") && err.contains("--demo"), "{err}");
    let (code, _, err) = run(&["once", "--jbd", "x=not-a-mac"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a Bluetooth address"), "{err}");
}

#[test]
fn run_demo_answers_every_tick_and_exits_on_eof() {
    let mut e = Execd::start(&["run", "--demo"]);
    for _ in 0..5 {
        e.tick();
        let lines = e.read_lines(DEMO_LINES, Duration::from_secs(10));
        check_demo_lines(&(lines.join("\n") + "\n"));
    }
    drop(e.child.stdin.take()); // Telegraf closes stdin to stop us.
    let (code, took, err) = e.wait(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{err}");
    eprintln!("exit took {took:?}");
    assert!(err.contains("I! stdin closed: stopping"), "{err}");
    assert!(err.contains("I! all devices disconnected"), "{err}");
    assert_log_prefixes(&err);
}

/// Telegraf's last tick and its stdin EOF can arrive together: the polls that tick asks for
/// are started and let finish (within the stop grace), and their lines are printed.
#[test]
fn a_tick_followed_at_once_by_eof_still_prints_its_lines() {
    let mut e = Execd::start(&["run", "--demo"]);
    // Past start-up (a stop during start-up ends it before any device is polled).
    assert!(
        e.wait_stderr(
            &format!("I! polling {DEMO_LINES} device(s)"),
            Duration::from_secs(60)
        ),
        "never started"
    );
    e.tick();
    e.close_stdin();
    let (code, _, lines, err) = e.finish(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(lines.len(), DEMO_LINES, "{lines:?}\n{err}");
    check_demo_lines(&(lines.join("\n") + "\n"));
}

#[test]
fn run_demo_exits_cleanly_on_sigterm() {
    let mut e = Execd::start(&["run", "--demo"]);
    e.tick();
    e.read_lines(DEMO_LINES, Duration::from_secs(10));
    e.sigterm();
    let (code, took, err) = e.wait(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{err}");
    eprintln!("exit took {took:?}");
    assert!(
        err.contains("SIGTERM: stopping") && err.contains("all devices disconnected"),
        "{err}"
    );
}

/// A Telegraf that stops reading stdout: blebatt carries on (device tasks, timers, the stop
/// path), drops and counts readings, says so once, and still stops cleanly on SIGTERM.
#[test]
fn a_stdout_nobody_reads_never_freezes_blebatt() {
    let e =
        Execd::spawn_unread(Command::new(BIN).args(["run", "--demo", "--interval", "10ms", "-v"]));
    assert!(
        e.wait_stderr("D! stdout is not being read", Duration::from_secs(60)),
        "the stdout queue never filled"
    );
    e.sigterm();
    let (code, _, err) = e.wait(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("SIGTERM: stopping"), "{err}");
    let warned: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("W! stdout was not read"))
        .collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(warned[0].ends_with("reading(s) dropped"), "{err}");
    assert_log_prefixes(&err);
}

/// Nobody will ever read stdout again: blebatt stops (cleanly, exit 0) instead of polling
/// into the void.
#[test]
fn a_closed_stdout_ends_run() {
    let mut e =
        Execd::spawn_unread(Command::new(BIN).args(["run", "--demo", "--interval", "10ms"]));
    e.close_stdout();
    let (code, _, err) = e.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("I! stdout closed: stopping"), "{err}");
    assert!(err.contains("all devices disconnected"), "{err}");
}

/// A stdin line of any length is a tick, and is never held in memory whole.
#[cfg(target_os = "linux")]
#[test]
fn a_huge_stdin_line_is_one_tick_and_is_not_buffered() {
    const LINE: usize = 64 << 20;
    let mut e = Execd::start(&["run", "--demo"]);
    let stdin = e.child.stdin.as_mut().unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..LINE / chunk.len() {
        stdin.write_all(&chunk).unwrap();
    }
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    check_demo_lines(&(e.read_lines(DEMO_LINES, Duration::from_secs(30)).join("\n") + "\n"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", e.child.id())).unwrap();
    let peak_kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    eprintln!("peak RSS {peak_kib} KiB after a {LINE}-byte line");
    assert!(peak_kib * 1024 < LINE / 2, "peak RSS {peak_kib} KiB");
    e.close_stdin();
    let (code, _, err) = e.wait(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{err}");
}

/// As a service (systemd/blebatt.service): `--interval` with /dev/null as stdin. Its EOF at
/// once is not a stop: blebatt polls until SIGTERM.
#[test]
fn with_an_interval_a_dev_null_stdin_is_not_a_stop() {
    let mut child = Command::new(BIN)
        .args(["run", "--demo", "--interval", "200ms"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if line.is_err() || tx.send(()).is_err() {
                break;
            }
        }
    });
    // Three polls of the three demo devices; an early exit ends the stream short.
    for n in 0..9 {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("line {n}: {e} (did it stop at the EOF?)"));
    }
    sigterm(child.id());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("I! SIGTERM: stopping"), "{err}");
    assert!(!err.contains("stdin closed"), "{err}");
}

#[test]
fn run_demo_interval_polls_on_its_own() {
    let e = Execd::start(&["run", "--demo", "--interval", "200ms"]);
    let lines = e.read_lines(3 * DEMO_LINES, Duration::from_secs(10));
    check_demo_lines(&(lines[..DEMO_LINES].join("\n") + "\n"));
    let mut e = e;
    drop(e.child.stdin.take());
    let (code, _, err) = e.wait(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn ticks_arriving_together_are_coalesced() {
    let mut e = Execd::start(&["run", "--demo"]);
    // Wait until the devices are up, then send a burst of ticks at once.
    e.tick();
    e.read_lines(DEMO_LINES, Duration::from_secs(10));
    e.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"\n\n\n\n\n\n\n\n\n\n")
        .unwrap();
    e.child.stdin.as_mut().unwrap().flush().unwrap();
    // One write of ten newlines (atomic on a pipe) is read at once: one tick, one line per
    // demo device.
    let first = e.read_lines(DEMO_LINES, Duration::from_secs(10));
    check_demo_lines(&(first.join("\n") + "\n"));
    e.close_stdin();
    let (code, _, later, err) = e.finish(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        later.is_empty(),
        "ten ticks at once became more than one poll: {later:?}"
    );
}

#[test]
fn config_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[device]]\nname = \"house\"\nkind = \"jbd\"\naddress = \"A4:C1:38:12:34:56\"\n",
    )
    .unwrap();
    let (code, out, err) = run(&["config", "check", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("OK, 1 device(s)"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[device]]\nname = \"house\"\nkind = \"jbd\"\naddress = \"A4:C1:38:12:34\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml line 4") && err.contains("not a Bluetooth address"),
        "{err}"
    );
}

/// Runs blebatt with no reachable Bluetooth: an error that is not exit 2 came from past the
/// validation. Stdin stays open (as under Telegraf): `run` must stop because Bluetooth cannot
/// be reached, not because stdin ended first.
fn run_offline(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/blebatt-test-bus",
        )
        .env(
            "STATE_DIRECTORY",
            std::env::temp_dir().join("blebatt-cli-test-state"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run blebatt");
    let stdin = child.stdin.take();
    let out = child.wait_with_output().expect("run blebatt");
    drop(stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// No Bluetooth to reach is a failure to retry (exit 1: Telegraf restarts the plugin), not a
/// usage error (exit 2), and it says what to check.
#[test]
fn no_reachable_bluetooth_is_exit_1_with_a_hint() {
    for cmd in ["once", "run"] {
        let (code, out, err) = run_offline(&[cmd, "--jbd", "van=A4:C1:38:00:00:01"]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert_eq!(out, "", "{cmd}");
        assert!(
            err.starts_with("E! cannot reach Bluetooth") && err.contains("Hint: is bluetoothd"),
            "{cmd}: {err}"
        );
    }
}

/// One validation for the file and the flags: `config check`, `once` and `run` refuse the same
/// values, with exit 2, naming the key and the fix, before anything touches Bluetooth.
#[test]
fn bad_values_are_exit_2_from_check_once_and_run_alike() {
    let dir = tempfile::tempdir().unwrap();
    let device = |name: &str, extra: &str| {
        format!(
            "[[device]]\nname = \"{name}\"\nkind = \"jbd\"\naddress = \"A4:C1:38:12:34:56\"\n{extra}"
        )
    };
    let cases = [
        (
            "newline-name",
            device("house\\nfake,device=x v=1", ""),
            "line 2",
            "control character",
        ),
        (
            "tab-name",
            device("house\\tx", ""),
            "line 2",
            "control character",
        ),
        (
            "zero-timeout",
            format!("timeout = \"0s\"\n{}", device("house", "")),
            "line 1",
            "timeout 0s is out of range",
        ),
        (
            "huge-timeout",
            device("house", "timeout = \"1000years\"\n"),
            "(device \"house\")",
            "is out of range",
        ),
        (
            "zero-interval",
            format!("interval = \"0s\"\n{}", device("house", "")),
            "line 1",
            "interval 0s is out of range",
        ),
        (
            "bad-adapter",
            device("house", "adapter = \"bluetooth\"\n"),
            "(device \"house\")",
            "not a BlueZ adapter name",
        ),
        (
            "huge-file",
            "# x\n".repeat(300_000),
            "huge-file.toml",
            "larger than 1024 KiB",
        ),
    ];
    for (name, text, location, message) in cases {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let file = path.to_str().unwrap();
        for args in [
            vec!["config", "check", file],
            vec!["once", "--config", file],
            vec!["run", "--config", file],
        ] {
            let (code, out, err) = run_offline(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(out.is_empty(), "{args:?} printed {out:?}");
            assert!(
                err.contains(location) && err.contains(message),
                "{args:?}: {err}"
            );
            assert!(err.contains("fix"), "{args:?}: {err}");
            assert_log_prefixes(&err);
        }
    }
    // A file without devices: `config check` says so; `run` without any device too.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "interval = \"10s\"\n").unwrap();
    let (code, _, err) = run_offline(&["config", "check", empty.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no devices"), "{err}");
    let (code, _, err) = run_offline(&["run", "--config", empty.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no devices"), "{err}");
}

#[test]
fn bad_flags_are_exit_2_naming_the_flag() {
    for (args, flag) in [
        (vec!["run", "--demo", "--interval", "0s"], "--interval"),
        (
            vec!["run", "--demo", "--interval", "1000years"],
            "--interval",
        ),
        (vec!["once", "--demo", "--timeout", "0s"], "--timeout"),
        (vec!["run", "--demo", "--timeout", "100years"], "--timeout"),
        (vec!["once", "--jbd", "a\nb=A4:C1:38:12:34:56"], "--jbd"),
    ] {
        let (code, out, err) = run_offline(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out:?}");
        assert!(err.contains(flag), "{args:?}: {err}");
        assert_log_prefixes(&err);
    }
}

#[test]
fn run_with_bad_config_exits_2_at_start_naming_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("blebatt.toml");
    std::fs::write(
        &bad,
        "[[device]]\nname = \"house\"\nkind = \"jbd\"\naddress = \"A4:C1:38:12:34:56\"\nmosfet = \"off\"\n",
    )
    .unwrap();
    let (code, out, err) = run(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("blebatt.toml line 5"), "{err}");
    assert!(
        err.contains("unknown field `mosfet`") && err.contains("fix:"),
        "{err}"
    );
    assert_log_prefixes(&err);
}

#[test]
fn usage_errors_are_prefixed_and_exit_2() {
    let (code, out, err) = run(&["run", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(err.contains("--no-such-flag"), "{err}");
    assert_log_prefixes(&err);
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("once") && out.contains("run") && out.contains("scan"));
}

#[test]
fn the_device_flag_is_documented_with_every_kind_and_takes_each() {
    let names: Vec<&str> = blebatt::devices::KINDS.iter().map(|k| k.name).collect();
    let listed: Vec<String> = blebatt::devices::KINDS
        .iter()
        .map(|k| format!("{} ({})", k.name, k.title))
        .collect();
    let (code, help, _) = run(&["once", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains(&format!("KIND is one of: {}", listed.join(", "))),
        "{help}"
    );
    // An unknown kind is a usage error (exit 2) naming the flag and the kinds, before any
    // radio is touched.
    let (code, _, err) = run(&["once", "--device", "daly:x=A4:C1:38:00:00:01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--device daly:x=A4:C1:38:00:00:01"), "{err}");
    assert!(err.contains(names[0]), "{err}");
}
