//! Energy and charge counters, and time to empty / to full, from a battery's readings. Pure:
//! readings in, totals out; no clock, no I/O, no logging.
//!
//! - Counters integrate by the trapezoid rule between consecutive readings, split by sign:
//!   current > 0 is charging (the schema's convention), power is the device's own voltage x
//!   current. Where the line between two readings crosses zero, each side gets its exact part.
//! - An interval longer than the gap limit is not integrated: the counters do not jump across
//!   it (the caller says so).
//! - Time estimates use an exponential moving average of the current (span [`EMA_SPAN`]
//!   readings), reset after a gap; below [`MIN_CURRENT_A`] there is no estimate.

use serde::{Deserialize, Serialize};

/// Readings the current's moving average spans (alpha = 2 / (span + 1)).
pub const EMA_SPAN: f64 = 6.0;
/// Below this smoothed current (A) the battery is idle: no time estimate.
pub const MIN_CURRENT_A: f64 = 0.1;
/// The shortest gap limit: an interval up to this long is always integrated.
pub const GAP_MIN_S: f64 = 600.0;
/// An interval longer than this many poll intervals is a gap (when that is above
/// [`GAP_MIN_S`]).
pub const GAP_POLLS: f64 = 3.0;
const SECONDS_PER_HOUR: f64 = 3600.0;

/// One reading, as the counters see it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time, ns.
    pub time_ns: i64,
    pub voltage_v: f64,
    /// Positive: charging.
    pub current_a: f64,
}

impl Sample {
    fn power_w(&self) -> f64 {
        self.voltage_v * self.current_a
    }
}

/// What grows: energy (Wh) and charge (Ah), into and out of the battery. Never negative,
/// never smaller than before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub charged_wh: f64,
    pub discharged_wh: f64,
    pub charged_ah: f64,
    pub discharged_ah: f64,
}

/// What one reading did to the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The first reading: nothing to integrate yet.
    First,
    /// The interval since the previous reading was integrated.
    Integrated { seconds: f64 },
    /// The interval was longer than the gap limit: not integrated.
    Gap { seconds: f64 },
    /// The reading is older than the previous one (a clock set back): not integrated.
    Backwards { seconds: f64 },
}

/// The integral over `seconds` of the straight line from `y0` to `y1`, as (its part above
/// zero, its part below zero), both >= 0.
pub fn split_trapezoid(y0: f64, y1: f64, seconds: f64) -> (f64, f64) {
    if y0 >= 0.0 && y1 >= 0.0 {
        ((y0 + y1) / 2.0 * seconds, 0.0)
    } else if y0 <= 0.0 && y1 <= 0.0 {
        (0.0, -(y0 + y1) / 2.0 * seconds)
    } else {
        // Crosses zero at the fraction f of the interval: two triangles.
        let f = y0 / (y0 - y1);
        let first = y0 * f * seconds / 2.0;
        let second = y1 * (1.0 - f) * seconds / 2.0;
        if y0 > 0.0 {
            (first, -second)
        } else {
            (second, -first)
        }
    }
}

/// An exponential moving average.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ema {
    value: Option<f64>,
}

impl Ema {
    pub fn add(&mut self, x: f64) -> f64 {
        let alpha = 2.0 / (EMA_SPAN + 1.0);
        let v = match self.value {
            None => x,
            Some(v) => (1.0 - alpha) * v + alpha * x,
        };
        self.value = Some(v);
        v
    }

    pub fn get(&self) -> Option<f64> {
        self.value
    }

    pub fn reset(&mut self) {
        self.value = None;
    }
}

/// The gap limit for a device polled every `poll_s` seconds: max(10 min, 3 polls).
pub fn gap_limit_s(poll_s: f64) -> f64 {
    GAP_MIN_S.max(GAP_POLLS * poll_s)
}

/// One device's counters and the state they continue from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub totals: Totals,
    /// The last reading (integrated or not): the next interval starts here.
    pub last: Option<Sample>,
    /// The smoothed current, for the time estimates.
    pub current: Ema,
    /// The typical interval between readings, for the gap limit.
    pub interval_s: Ema,
}

impl Counters {
    /// Counters that continue from saved totals and last reading.
    pub fn resume(totals: Totals, last: Option<Sample>) -> Self {
        Counters {
            totals,
            last,
            ..Self::default()
        }
    }

    /// Adds a reading. `poll_s` is the configured poll interval when there is one; without
    /// it the typical interval seen so far stands in.
    pub fn add(&mut self, s: Sample, poll_s: Option<f64>) -> Step {
        let Some(prev) = self.last.replace(s) else {
            self.current.add(s.current_a);
            return Step::First;
        };
        let seconds = (s.time_ns - prev.time_ns) as f64 / 1e9;
        if seconds < 0.0 {
            self.current.reset();
            self.current.add(s.current_a);
            return Step::Backwards { seconds };
        }
        let poll = poll_s.or(self.interval_s.get()).unwrap_or(0.0);
        if seconds > gap_limit_s(poll) {
            self.current.reset();
            self.current.add(s.current_a);
            return Step::Gap { seconds };
        }
        let hours = seconds / SECONDS_PER_HOUR;
        let (in_wh, out_wh) = split_trapezoid(prev.power_w(), s.power_w(), hours);
        let (in_ah, out_ah) = split_trapezoid(prev.current_a, s.current_a, hours);
        let t = &mut self.totals;
        t.charged_wh += in_wh;
        t.discharged_wh += out_wh;
        t.charged_ah += in_ah;
        t.discharged_ah += out_ah;
        self.current.add(s.current_a);
        if seconds > 0.0 {
            self.interval_s.add(seconds);
        }
        Step::Integrated { seconds }
    }

    /// Seconds until empty at the smoothed current, while discharging (at least
    /// [`MIN_CURRENT_A`]).
    pub fn time_to_empty_s(&self, remaining_ah: f64) -> Option<i64> {
        let i = self.current.get()?;
        (i <= -MIN_CURRENT_A)
            .then(|| (remaining_ah.max(0.0) / -i * SECONDS_PER_HOUR).round() as i64)
    }

    /// Seconds until full at the smoothed current, while charging (at least
    /// [`MIN_CURRENT_A`]).
    pub fn time_to_full_s(&self, remaining_ah: f64, full_ah: f64) -> Option<i64> {
        let i = self.current.get()?;
        (i >= MIN_CURRENT_A)
            .then(|| ((full_ah - remaining_ah).max(0.0) / i * SECONDS_PER_HOUR).round() as i64)
    }
}

#[cfg(test)]
mod tests;
