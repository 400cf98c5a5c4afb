//! Test-only: records what this thread logs, so that a test sees its own lines (a paused-clock
//! test runs its tasks on the test's thread) and no other test's.

use std::cell::RefCell;

use log::{Level, Metadata, Record};

thread_local! {
    static LINES: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        LINES.with(|l| {
            l.borrow_mut()
                .push((record.level(), record.args().to_string()))
        });
    }

    fn flush(&self) {}
}

static INSTALL: std::sync::Once = std::sync::Once::new();

/// Starts capturing on this thread (dropping what it logged so far).
pub fn start() {
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in the unit tests");
        log::set_max_level(log::LevelFilter::Trace);
    });
    LINES.with(|l| l.borrow_mut().clear());
}

/// How many lines at `level` contain `needle`.
pub fn count(level: Level, needle: &str) -> usize {
    LINES.with(|l| {
        l.borrow()
            .iter()
            .filter(|(lv, m)| *lv == level && m.contains(needle))
            .count()
    })
}
