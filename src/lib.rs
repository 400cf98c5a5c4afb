//! blebatt: JBD BMS and Thornwave PowerMon over Bluetooth LE, as Influx line protocol for
//! Telegraf's `inputs.execd`.
//!
//! The data path, in module order: `run` (ticks) -> `device` (one task per device) ->
//! `ble` or `demo` (bytes) -> `protocol` (typed values) -> `output` (line protocol).

pub mod output;
pub mod protocol;
pub mod reading;
