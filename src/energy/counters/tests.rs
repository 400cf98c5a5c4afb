//! Known currents and voltages over known times give exact totals; the gap and restart rules.

use proptest::prelude::*;

use super::*;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * S;

fn at(seconds: f64, voltage_v: f64, current_a: f64) -> Sample {
    Sample {
        time_ns: T0 + (seconds * 1e9) as i64,
        voltage_v,
        current_a,
    }
}

/// Feeds `f(t)` = (voltage, current) every `step_s` from 0 to `end_s` inclusive.
fn feed(c: &mut Counters, end_s: f64, step_s: f64, f: impl Fn(f64) -> (f64, f64)) {
    let mut t = 0.0;
    while t <= end_s + 1e-9 {
        let (v, i) = f(t);
        c.add(at(t, v, i), None);
        t += step_s;
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn constant_charging_and_discharging_give_exact_energy_and_charge_on_their_side() {
    let mut c = Counters::default();
    feed(&mut c, 3600.0, 10.0, |_| (13.0, 10.0));
    let t = c.totals;
    assert!(
        close(t.charged_ah, 10.0) && close(t.charged_wh, 130.0),
        "{t:?}"
    );
    assert_eq!((t.discharged_ah, t.discharged_wh), (0.0, 0.0));

    let mut c = Counters::default();
    feed(&mut c, 1800.0, 30.0, |_| (12.0, -5.0));
    let t = c.totals;
    assert!(
        close(t.discharged_ah, 2.5) && close(t.discharged_wh, 30.0),
        "{t:?}"
    );
    assert_eq!((t.charged_ah, t.charged_wh), (0.0, 0.0));
}

#[test]
fn a_current_crossing_zero_gives_each_side_its_exact_part() {
    // +2 A to -2 A in a straight line over one hour at 10 V: two triangles of 0.5 Ah.
    let mut c = Counters::default();
    assert_eq!(c.add(at(0.0, 10.0, 2.0), None), Step::First);
    assert_eq!(
        c.add(at(3600.0, 10.0, -2.0), Some(3600.0)),
        Step::Integrated { seconds: 3600.0 }
    );
    let t = c.totals;
    assert!(
        close(t.charged_ah, 0.5) && close(t.discharged_ah, 0.5),
        "{t:?}"
    );
    assert!(
        close(t.charged_wh, 5.0) && close(t.discharged_wh, 5.0),
        "{t:?}"
    );
    // And the other way round, unevenly: +1 A to -3 A over 4 s: 0.5 As in, 4.5 As out.
    assert_eq!(split_trapezoid(1.0, -3.0, 4.0), (0.5, 4.5));
    assert_eq!(split_trapezoid(-3.0, 1.0, 4.0), (0.5, 4.5));
    assert_eq!(split_trapezoid(0.0, -2.0, 3.0), (0.0, 3.0));
    assert_eq!(split_trapezoid(2.0, 0.0, 3.0), (3.0, 0.0));
}

#[test]
fn an_interval_longer_than_the_gap_limit_is_not_integrated() {
    assert_eq!(gap_limit_s(10.0), 600.0);
    assert_eq!(gap_limit_s(300.0), 900.0);
    let mut c = Counters::default();
    feed(&mut c, 60.0, 10.0, |_| (12.0, -6.0));
    let before = c.totals;
    assert!(close(before.discharged_ah, 0.1));
    // 10 min 1 s later: a gap (the typical interval seen is 10 s).
    assert_eq!(
        c.add(at(60.0 + 601.0, 12.0, -6.0), None),
        Step::Gap { seconds: 601.0 }
    );
    assert_eq!(c.totals, before, "no jump across the gap");
    // The next interval counts again, from the reading after the gap.
    assert_eq!(
        c.add(at(60.0 + 611.0, 12.0, -6.0), None),
        Step::Integrated { seconds: 10.0 }
    );
    assert!(close(c.totals.discharged_ah, 0.1 + 6.0 * 10.0 / 3600.0));
    // Exactly at the limit is integrated; with a 5-minute poll the limit is 15 minutes.
    let mut c = Counters::default();
    c.add(at(0.0, 12.0, -6.0), None);
    assert_eq!(
        c.add(at(600.0, 12.0, -6.0), None),
        Step::Integrated { seconds: 600.0 }
    );
    assert_eq!(
        c.add(at(600.0 + 660.0, 12.0, -6.0), Some(300.0)),
        Step::Integrated { seconds: 660.0 }
    );
    assert_eq!(
        c.add(at(600.0 + 660.0 + 901.0, 12.0, -6.0), Some(300.0)),
        Step::Gap { seconds: 901.0 }
    );
}

#[test]
fn without_a_configured_interval_the_typical_one_seen_sets_the_gap_limit() {
    // Polled every 5 minutes: the limit is 15 minutes, so 11 minutes is counted.
    let mut c = Counters::default();
    for k in 0..4 {
        c.add(at(300.0 * f64::from(k), 12.0, -6.0), None);
    }
    assert_eq!(
        c.add(at(900.0 + 660.0, 12.0, -6.0), None),
        Step::Integrated { seconds: 660.0 }
    );
    // A reading at the same instant as the last adds nothing, and is no clock going back.
    let before = c.totals;
    assert_eq!(
        c.add(at(900.0 + 660.0, 12.0, -6.0), None),
        Step::Integrated { seconds: 0.0 }
    );
    assert_eq!(c.totals, before);
}

#[test]
fn a_reading_from_before_the_last_one_is_not_integrated() {
    let mut c = Counters::default();
    c.add(at(100.0, 12.0, 5.0), None);
    assert_eq!(
        c.add(at(90.0, 12.0, 5.0), None),
        Step::Backwards { seconds: -10.0 }
    );
    assert_eq!(c.totals, Totals::default());
}

#[test]
fn time_estimates_come_from_the_smoothed_current_and_only_above_a_tenth_of_an_amp() {
    let mut c = Counters::default();
    feed(&mut c, 100.0, 10.0, |_| (12.0, -10.0));
    assert_eq!(c.time_to_empty_s(50.0), Some(18_000));
    assert_eq!(c.time_to_full_s(50.0, 100.0), None, "not while discharging");
    let mut c = Counters::default();
    feed(&mut c, 100.0, 10.0, |_| (12.0, 5.0));
    assert_eq!(c.time_to_full_s(50.0, 100.0), Some(36_000));
    assert_eq!(c.time_to_full_s(120.0, 100.0), Some(0), "already full");
    assert_eq!(c.time_to_empty_s(50.0), None, "not while charging");
    let mut c = Counters::default();
    feed(&mut c, 100.0, 10.0, |_| (12.0, -0.09));
    assert_eq!(c.time_to_empty_s(50.0), None, "idle");
    assert_eq!(c.time_to_full_s(50.0, 100.0), None, "idle");
    assert_eq!(
        Counters::default().time_to_empty_s(50.0),
        None,
        "no reading yet"
    );
}

#[test]
fn the_moving_average_spans_about_six_readings_and_starts_over_after_a_gap() {
    let mut c = Counters::default();
    c.add(at(0.0, 12.0, -10.0), None);
    c.add(at(10.0, 12.0, -3.0), None);
    // alpha = 2/7: -10 + 2/7 * 7 = -8.
    assert!(close(c.current.get().unwrap(), -8.0));
    c.add(at(2000.0, 12.0, 4.0), None);
    assert_eq!(c.current.get(), Some(4.0), "reset by the gap");
}

#[test]
fn a_restart_from_saved_state_continues_the_totals_without_loss_or_double_count() {
    // A ramp from -20 A to +20 A over an hour, read every 10 s; state saved at 1000 s, the
    // process killed at 1055 s (readings after the save are lost), restarted at 1080 s.
    let ramp = |t: f64| (13.0, -20.0 + 40.0 * t / 3600.0);
    let mut whole = Counters::default();
    feed(&mut whole, 3600.0, 10.0, ramp);

    let mut before = Counters::default();
    feed(&mut before, 1000.0, 10.0, ramp);
    let (saved_totals, saved_last) = (before.totals, before.last);
    let mut after = Counters::resume(saved_totals, saved_last);
    let mut t = 1080.0;
    while t <= 3600.0 {
        let (v, i) = ramp(t);
        let step = after.add(at(t, v, i), None);
        assert!(!matches!(step, Step::Gap { .. } | Step::First), "{step:?}");
        t += 10.0;
    }
    // The current is a straight line: the 80 s across the restart integrate exactly as the
    // eight 10 s steps did.
    let (a, b) = (whole.totals, after.totals);
    for (x, y) in [
        (a.charged_ah, b.charged_ah),
        (a.discharged_ah, b.discharged_ah),
    ] {
        assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
    }
    // Power is V x a line, also a line: exact too.
    assert!((a.charged_wh - b.charged_wh).abs() < 1e-9);
    assert!((a.discharged_wh - b.discharged_wh).abs() < 1e-9);
}

proptest! {
    #![proptest_config(crate::devices::protocol::proptest_config())]

    #[test]
    fn fuzz_the_split_parts_add_up_and_are_never_negative(
        y0 in -1e4f64..1e4, y1 in -1e4f64..1e4, dt in 0.0f64..1e5,
    ) {
        let (pos, neg) = split_trapezoid(y0, y1, dt);
        prop_assert!(pos >= 0.0 && neg >= 0.0);
        let net = (y0 + y1) / 2.0 * dt;
        prop_assert!((pos - neg - net).abs() <= 1e-9 * (1.0 + net.abs() + pos + neg));
    }

    #[test]
    fn fuzz_totals_only_grow_whatever_the_readings(
        readings in prop::collection::vec((-3600i64..3600, 0.0f64..60.0, -300.0f64..300.0), 1..60),
    ) {
        let mut c = Counters::default();
        let mut t = T0;
        for (dt, v, i) in readings {
            t += dt * S / 4;
            let before = c.totals;
            c.add(Sample { time_ns: t, voltage_v: v, current_a: i }, None);
            let after = c.totals;
            prop_assert!(after.charged_wh >= before.charged_wh);
            prop_assert!(after.discharged_wh >= before.discharged_wh);
            prop_assert!(after.charged_ah >= before.charged_ah);
            prop_assert!(after.discharged_ah >= before.discharged_ah);
        }
    }
}
