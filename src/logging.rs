//! Logs to stderr, one line each, prefixed with Telegraf's level markers (`E! `, `W! `, `I! `,
//! `D! `) so that `inputs.execd` routes them to the right level. Never to stdout.

use std::io::Write;

use log::{Level, LevelFilter, Metadata, Record};

struct StderrLogger {
    /// Level for blebatt's own messages.
    own: LevelFilter,
    /// Level for other crates' messages (btleplug, bluez-async, ...).
    others: LevelFilter,
}

fn prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "E! ",
        Level::Warn => "W! ",
        Level::Info => "I! ",
        Level::Debug | Level::Trace => "D! ",
    }
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        let max = if m.target().starts_with("blebatt") {
            self.own
        } else {
            self.others
        };
        m.level() <= max
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args().to_string();
        let mut err = std::io::stderr().lock();
        // One line per message: a newline inside would reach Telegraf as an unprefixed line.
        let _ = writeln!(
            err,
            "{}{}",
            prefix(record.level()),
            msg.replace('\n', " | ")
        );
    }

    fn flush(&self) {}
}

/// Installs the logger. `verbosity`: -1 quiet (errors and warnings), 0 info, 1 debug, 2 debug
/// including other crates.
pub fn init(verbosity: i8) {
    let own = match verbosity {
        i8::MIN..=-1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        _ => LevelFilter::Debug,
    };
    let others = if verbosity >= 2 {
        LevelFilter::Debug
    } else {
        LevelFilter::Warn
    };
    let logger = StderrLogger { own, others };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(own.max(others));
    }
}
