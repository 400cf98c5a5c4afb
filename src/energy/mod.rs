//! Energy in and out, charge in and out, time to empty and to full: one generic layer every
//! battery kind feeds (voltage, current, remaining and full capacity), between a reading and
//! its line. `counters.rs` is the arithmetic (pure).

pub mod counters;
