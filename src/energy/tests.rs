//! The meter: saving when counters start, at most every minute, at a clean stop; continuing
//! after a restart; a bad state file or directory is a warning, never a crash.

use super::*;
use crate::log_capture as capture;

const ADDR: &str = "AA:BB:CC:DD:EE:01";
const S: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * S;

fn discharging(a: f64) -> Battery {
    Battery {
        voltage_v: 12.0,
        current_a: -a,
        remaining_ah: Some(50.0),
        full_ah: Some(100.0),
    }
}

fn saved_totals(dir: &Path) -> Option<Totals> {
    state::load(dir, ADDR, T0 + 3600 * S)
        .unwrap()
        .map(|s| s.totals)
}

#[test]
fn the_state_is_saved_when_counting_starts_then_at_most_every_minute_and_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Meter::persistent("house", ADDR, dir.path(), None, T0);
    assert_eq!(saved_totals(dir.path()), None);
    m.add(&discharging(6.0), T0);
    assert_eq!(
        saved_totals(dir.path()),
        Some(Totals::default()),
        "saved at start"
    );
    // 10 s polls: the file changes only once a minute of readings has passed.
    for k in 1..=5 {
        m.add(&discharging(6.0), T0 + k * 10 * S);
    }
    assert_eq!(saved_totals(dir.path()), Some(Totals::default()));
    let d = m.add(&discharging(6.0), T0 + 60 * S);
    assert_eq!(saved_totals(dir.path()), Some(d.totals), "a minute on");
    assert!((d.totals.discharged_ah - 0.1).abs() < 1e-12);
    let d = m.add(&discharging(6.0), T0 + 70 * S);
    assert_ne!(saved_totals(dir.path()), Some(d.totals));
    m.save();
    assert_eq!(saved_totals(dir.path()), Some(d.totals), "saved at stop");
}

#[test]
fn after_a_restart_the_counters_continue_across_the_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Meter::persistent("house", ADDR, dir.path(), None, T0);
    for k in 0..=6 {
        m.add(&discharging(6.0), T0 + k * 10 * S);
    }
    // Killed after the save at 60 s; restarted, first reading at 120 s.
    drop(m);
    let mut m = Meter::persistent("house", ADDR, dir.path(), None, T0 + 120 * S);
    let d = m.add(&discharging(6.0), T0 + 120 * S);
    // 0..60 s before the kill, 60..120 s across it: 6 A for 2 minutes.
    assert!((d.totals.discharged_ah - 0.2).abs() < 1e-12, "{d:?}");
    assert!((d.totals.discharged_wh - 2.4).abs() < 1e-12, "{d:?}");
}

#[test]
fn a_bad_state_file_is_one_warning_and_a_fresh_start() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(state::path(dir.path(), ADDR), "version = 1\naddress = ").unwrap();
    let mut m = Meter::persistent("house", ADDR, dir.path(), None, T0);
    assert_eq!(
        capture::count(
            log::Level::Warn,
            "house (AA:BB:CC:DD:EE:01): energy counters start afresh"
        ),
        1
    );
    let d = m.add(&discharging(6.0), T0);
    assert_eq!(d.totals, Totals::default());
    assert_eq!(
        saved_totals(dir.path()),
        Some(Totals::default()),
        "replaced"
    );
}

#[test]
fn a_directory_that_cannot_be_written_is_one_warning_and_counting_goes_on() {
    capture::start();
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("removed");
    std::fs::create_dir(&gone).unwrap();
    let mut m = Meter::persistent("house", ADDR, &gone, None, T0);
    std::fs::remove_dir(&gone).unwrap();
    for k in 0..=20 {
        m.add(&discharging(6.0), T0 + k * 10 * S);
    }
    m.save();
    assert_eq!(
        capture::count(log::Level::Warn, "cannot save the energy counters"),
        1
    );
    let d = m.add(&discharging(6.0), T0 + 210 * S);
    assert!((d.totals.discharged_ah - 6.0 * 210.0 / 3600.0).abs() < 1e-12);
}

#[test]
fn a_gap_is_said_once_and_not_counted() {
    capture::start();
    let mut m = Meter::volatile("house", ADDR);
    m.add(&discharging(6.0), T0);
    let before = m.add(&discharging(6.0), T0 + 10 * S).totals;
    let after = m.add(&discharging(6.0), T0 + 3610 * S).totals;
    assert_eq!(before, after);
    assert_eq!(
        capture::count(
            log::Level::Info,
            "house (AA:BB:CC:DD:EE:01): no reading for 1h"
        ),
        1
    );
}

#[test]
fn estimates_need_the_capacities_they_use() {
    let mut m = Meter::volatile("house", ADDR);
    let d = m.add(&discharging(10.0), T0);
    assert_eq!((d.time_to_empty_s, d.time_to_full_s), (Some(18_000), None));
    let no_capacity = Battery {
        remaining_ah: None,
        full_ah: None,
        ..discharging(10.0)
    };
    let d = m.add(&no_capacity, T0 + 10 * S);
    assert_eq!((d.time_to_empty_s, d.time_to_full_s), (None, None));
    let mut m = Meter::volatile("house", ADDR);
    let charging = Battery {
        current_a: 5.0,
        ..discharging(0.0)
    };
    assert_eq!(m.add(&charging, T0).time_to_full_s, Some(36_000));
    let no_full = Battery {
        full_ah: None,
        ..charging
    };
    assert_eq!(m.add(&no_full, T0 + 10 * S).time_to_full_s, None);
}

#[test]
fn the_state_directory_is_the_configured_one_or_systemds_or_none_when_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("a/b");
    assert_eq!(
        state_dir(Some(&mine)),
        Some(mine.clone()),
        "made when missing"
    );
    assert!(mine.is_dir());
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    assert_eq!(state_dir(Some(&file)), None, "not a directory");
}

#[test]
fn the_default_state_directory_is_systemds_then_the_systems_then_the_users() {
    use std::ffi::OsString;
    let choose = |configured: Option<&str>, vars: &[(&str, &str)], system: bool| {
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        };
        choose_state_dir(configured.map(Path::new), &env, &|| system)
    };
    let p = |s: &str| Some(PathBuf::from(s));
    assert_eq!(
        choose(Some("/mine"), &[("STATE_DIRECTORY", "/sd")], true),
        p("/mine")
    );
    assert_eq!(choose(None, &[("STATE_DIRECTORY", "/sd")], true), p("/sd"));
    // Telegraf's own StateDirectory and ours: ours.
    assert_eq!(
        choose(
            None,
            &[("STATE_DIRECTORY", "/var/lib/telegraf:/var/lib/blebatt")],
            false
        ),
        p("/var/lib/blebatt")
    );
    assert_eq!(
        choose(
            None,
            &[("STATE_DIRECTORY", "/var/lib/telegraf:/var/lib/other")],
            false
        ),
        p("/var/lib/telegraf")
    );
    let home = [("XDG_STATE_HOME", "/x"), ("HOME", "/h")];
    assert_eq!(choose(None, &home, true), p(SYSTEM_STATE_DIR));
    assert_eq!(choose(None, &home, false), p("/x/blebatt"));
    assert_eq!(
        choose(
            None,
            &[
                ("STATE_DIRECTORY", ""),
                ("XDG_STATE_HOME", ""),
                ("HOME", "/h")
            ],
            false
        ),
        p("/h/.local/state/blebatt")
    );
    assert_eq!(choose(None, &[], false), None);
}
