//! The energy counters through the real binary: `run --demo` with a state directory keeps
//! counting across a `kill -9` (no reset, no jump) and saves at a clean stop.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use influxdb_line_protocol::FieldValue;

const DEVICE: &str = "demo-12v";
/// Lines per tick: one per demo device.
const DEMO_LINES: usize = 6;
/// Demo devices with energy counters: all but the solar charger (a source, not a battery).
const DEMO_METERED: usize = DEMO_LINES - 1;
/// demo-12v's largest current: 4.2 A x 1.6 (`demo::swing`).
const MAX_CURRENT_A: f64 = 4.2 * 1.6;

/// (time ns, charged + discharged capacity Ah) of a demo-12v line.
fn counted(line: &str) -> (i64, f64) {
    let parsed = parse_all(line);
    let l = &parsed[0];
    let ah = |k: &str| match field(l, k) {
        FieldValue::F64(v) => *v,
        other => panic!("{k}: {other:?}"),
    };
    (
        l.timestamp.expect("a timestamp"),
        ah("charged_capacity") + ah("discharged_capacity"),
    )
}

fn start(dir: &std::path::Path) -> Execd {
    Execd::spawn(Command::new(BIN).args([
        "run",
        "--demo",
        "--interval",
        "1s",
        "--state-dir",
        dir.to_str().unwrap(),
    ]))
}

/// The demo-12v lines among the next `n` ticks' lines.
fn next_lines(e: &Execd, ticks: usize) -> Vec<String> {
    e.read_lines(DEMO_LINES * ticks, Duration::from_secs(60))
        .into_iter()
        .filter(|l| l.contains(&format!(",device={DEVICE},")))
        .collect()
}

#[test]
fn counters_continue_across_a_kill_9_and_are_saved_at_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path());
    let lines = next_lines(&first, 4);
    let (t1, before_kill) = counted(lines.last().unwrap());
    assert!(before_kill > 0.0, "counting: {lines:?}");
    // Saved when counting started (the next save is a minute later): the file is there.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        DEMO_METERED,
        "one file per metered device"
    );
    first.child.kill().unwrap();
    let _ = first.child.wait();

    let mut second = start(dir.path());
    let lines = next_lines(&second, 3);
    let (t2, after) = counted(&lines[0]);
    let downtime_s = (t2 - t1) as f64 / 1e9;
    // No reset: what was counted before the kill is still there (the interval from the last
    // saved reading to the first new one is counted, so at least as much as before).
    assert!(after >= before_kill * 0.95, "{after} < {before_kill}");
    // No jump: at most what the largest current moves in the time between the two lines.
    assert!(
        after <= before_kill + MAX_CURRENT_A * downtime_s / 3600.0 * 1.05,
        "{after} jumped from {before_kill} in {downtime_s} s"
    );
    // Counters only grow.
    let counts: Vec<f64> = lines.iter().map(|l| counted(l).1).collect();
    assert!(counts.windows(2).all(|w| w[1] >= w[0]), "{counts:?}");

    // A clean stop (stdin EOF, as Telegraf stops it) saves what was printed last.
    second.close_stdin();
    let (code, _, last_lines, stderr) = second.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stderr}");
    let last = last_lines
        .iter()
        .rev()
        .find(|l| l.contains(&format!(",device={DEVICE},")))
        .map_or(*counts.last().unwrap(), |l| counted(l).1);
    let state = std::fs::read_to_string(dir.path().join("DEADBEEF0001.toml")).unwrap();
    let table: toml::Table = toml::from_str(&state).unwrap();
    let totals = table["totals"].as_table().unwrap();
    let saved =
        totals["charged_ah"].as_float().unwrap() + totals["discharged_ah"].as_float().unwrap();
    assert!((saved - last).abs() < 1e-5, "saved {saved}, printed {last}");
}
