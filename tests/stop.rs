//! A stop is honoured in every phase: start-up while BlueZ does not answer, a connect, a
//! poll, a backoff wait, a slow disconnect; and a second signal exits at once in every phase.
//! The real binary, over the real client stack, against a mock BlueZ on a private bus.
//!
//! Waits are bounded by Telegraf's own deadline (it sends SIGKILL 5 s after SIGTERM); the
//! tests assert on what happened (exit code, BlueZ calls, log lines), and print how long the
//! stop took.

mod common;
mod support;

use std::process::Command;
use std::time::Duration;

use common::*;
use support::bus::PrivateBus;
use support::fixtures::pack_4s;
use support::mock_bluez::{EventKind, Faults, MockBluez, MockDevice, MockEvent};

const JBD: &str = "AA:BB:CC:DD:EE:01";
/// Telegraf sends SIGKILL this long after SIGTERM.
const TELEGRAF_KILL: Duration = Duration::from_secs(5);
/// Bound on waiting for a mock event (generous: a loaded 2-core machine).
const EVENT_WAIT: Duration = Duration::from_secs(30);

fn jbd() -> MockDevice {
    MockDevice::jbd(JBD, "SP04S034").with_replies(pack_4s().replies())
}

fn blebatt(bus: &PrivateBus, args: &[&str]) -> Execd {
    Execd::spawn(&mut blebatt_on(&bus.address(), args))
}

fn run(bus: &PrivateBus) -> Execd {
    blebatt(bus, &["run", "--jbd", &format!("house={JBD}")])
}

fn kill(e: &Execd, sig: &str) {
    let pid = e.child.id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

fn ignored_call(e: &MockEvent) -> bool {
    matches!(e.kind, EventKind::CallIgnored { .. })
}

fn is(mac: &str, pred: impl Fn(&EventKind) -> bool) -> impl Fn(&MockEvent) -> bool {
    let mac = mac.to_string();
    move |e| e.is_for(&mac) && pred(&e.kind)
}

#[test]
fn a_stop_during_start_up_while_bluez_does_not_answer_exits_0_at_once() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_wedged(&bus.address());
    let e = run(&bus);
    assert!(
        mock.wait_for(ignored_call, EVENT_WAIT),
        "blebatt never asked BlueZ"
    );
    e.sigterm();
    let (code, took, err) = e.wait(TELEGRAF_KILL);
    eprintln!("stopped {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("SIGTERM: stopping before any device"), "{err}");
    assert_log_prefixes(&err);
}

#[test]
fn once_interrupted_during_start_up_exits_1_without_output() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_wedged(&bus.address());
    let e = blebatt(&bus, &["once", "--jbd", &format!("house={JBD}")]);
    assert!(
        mock.wait_for(ignored_call, EVENT_WAIT),
        "blebatt never asked BlueZ"
    );
    kill(&e, "INT");
    let (code, _, lines, err) = e.finish(TELEGRAF_KILL);
    assert_eq!(code, Some(1), "{err}");
    assert!(lines.is_empty(), "{lines:?}");
    assert!(err.contains("SIGINT: interrupted"), "{err}");
}

/// The first signal must not wait on a runtime that is busy starting: with a tick already
/// queued, it once blocked the signal thread, and the second signal was never seen.
#[test]
fn a_tick_and_two_signals_during_start_up_exit_at_once() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_wedged(&bus.address());
    let mut e = run(&bus);
    e.tick();
    assert!(
        mock.wait_for(ignored_call, EVENT_WAIT),
        "blebatt never asked BlueZ"
    );
    e.sigterm();
    e.sigterm();
    let (code, took, err) = e.wait(TELEGRAF_KILL);
    eprintln!("exited {took:?} after the signals");
    // 0 if the clean stop won the race, 1 if the second signal did; never a hang.
    assert!(matches!(code, Some(0 | 1)), "{code:?}: {err}");
}

/// A second signal while the first stop waits on a slow Disconnect exits at once, and says so.
#[test]
fn a_second_signal_during_a_slow_disconnect_exits_1_at_once() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(&bus.address(), vec![jbd()]);
    let mut e = run(&bus);
    e.tick();
    e.read_lines(1, EVENT_WAIT);
    mock.update_faults(JBD, |f| f.disconnect_delay = Duration::from_secs(60));
    e.sigterm();
    assert!(mock.wait_for(
        is(JBD, |k| matches!(k, EventKind::Disconnect { .. })),
        EVENT_WAIT
    ));
    e.sigterm();
    let (code, _, err) = e.wait(TELEGRAF_KILL);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("E! second signal"), "{err}");
    assert!(!err.contains("all devices disconnected"), "{err}");
}

/// One signal and a Disconnect that never completes: blebatt still exits within Telegraf's
/// deadline, and does not claim the device is disconnected.
#[test]
fn a_disconnect_that_does_not_finish_is_not_reported_as_done() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(&bus.address(), vec![jbd()]);
    let mut e = run(&bus);
    e.tick();
    e.read_lines(1, EVENT_WAIT);
    mock.update_faults(JBD, |f| f.disconnect_delay = Duration::from_secs(60));
    e.sigterm();
    let (code, took, err) = e.wait(TELEGRAF_KILL);
    eprintln!("stopped {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("all devices disconnected"), "{err}");
    assert!(err.contains("could not be confirmed disconnected"), "{err}");
}

#[test]
fn a_stop_during_a_poll_of_a_silent_device_disconnects_it() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![jbd().with_faults(Faults {
            silent: true,
            ..Faults::default()
        })],
    );
    let mut e = run(&bus);
    e.tick();
    assert!(mock.wait_for(
        is(JBD, |k| matches!(k, EventKind::Write { .. })),
        EVENT_WAIT
    ));
    e.sigterm();
    let (code, took, err) = e.wait(TELEGRAF_KILL);
    eprintln!("stopped {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("all devices disconnected"), "{err}");
    assert!(!mock.is_connected(JBD));
}

#[test]
fn a_stop_during_a_backoff_wait_exits_0() {
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![jbd().with_faults(Faults {
            refuse_connects: 1000,
            ..Faults::default()
        })],
    );
    let e = run(&bus);
    // Two refusals: blebatt is now waiting out a backoff of about 2 s.
    assert!(mock.wait_for_count(
        is(JBD, |k| matches!(k, EventKind::ConnectRefused { .. })),
        2,
        EVENT_WAIT
    ));
    e.sigterm();
    let (code, took, err) = e.wait(TELEGRAF_KILL);
    eprintln!("stopped {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("SIGTERM: stopping"), "{err}");
    assert!(!mock.is_connected(JBD));
}

#[test]
fn a_stop_while_bluez_answers_a_subscribe_unsubscribes_and_disconnects() {
    // The notify session exists from the StartNotify call on; a stop that comes before its
    // answer still ends it (StopNotify) and the link.
    let bus = PrivateBus::start();
    let mock = MockBluez::start_with(
        &bus.address(),
        vec![jbd().with_faults(Faults {
            start_notify_delay: Duration::from_secs(3600),
            ..Faults::default()
        })],
    );
    let e = run(&bus);
    assert!(
        mock.wait_for(
            is(JBD, |k| matches!(k, EventKind::StartNotify { .. })),
            EVENT_WAIT
        ),
        "never subscribed"
    );
    e.sigterm();
    let (code, took, err) = e.wait(TELEGRAF_KILL);
    eprintln!("stopped {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        mock.count(is(JBD, |k| matches!(k, EventKind::StopNotify { .. }))),
        1,
        "{err}"
    );
    assert!(!mock.is_notifying(JBD));
    assert!(!mock.is_connected(JBD));
}
