//! blebatt: JBD BMS and Thornwave PowerMon over Bluetooth LE, as Influx line protocol for
//! Telegraf's `inputs.execd`.
//!
//! The data path, in module order: `run` (ticks) -> `device` (one task per device) ->
//! `ble` or `demo` (bytes) -> `protocol` (typed values) -> `output` (line protocol).

pub mod ble;
pub mod cli;
pub mod config;
pub mod demo;
pub mod device;
pub mod logging;
pub mod output;
pub mod protocol;
pub mod reading;
pub mod run;

#[cfg(test)]
mod log_capture;
