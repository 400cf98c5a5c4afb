//! blebatt: JBD BMS and Thornwave PowerMon over Bluetooth LE, as Influx line protocol for
//! Telegraf's `inputs.execd`.
//!
//! The path of one reading, in module order:
//! - `run`: the commands; a tick (stdin line or interval) asks every device task for a reading;
//! - `device`: one task per device: connects, reconnects with backoff, stops; it knows no
//!   kind, and hands each poll to the device's session;
//! - `devices/<kind>`: the kind's session speaks its protocol over the transport, and its
//!   pure protocol code decodes the bytes into a typed reading (`devices` is the registry);
//! - `transport`: the GATT seam, implemented by `ble` (btleplug, BlueZ) and `demo`;
//! - `output`: the reading, through its kind's schema, into one line of line protocol, which
//!   `run` prints.

pub mod ble;
pub mod cli;
pub mod config;
pub mod demo;
pub mod device;
pub mod devices;
pub mod energy;
pub mod logging;
pub mod output;
pub mod reading;
pub mod run;
pub mod secret;
pub mod transport;

#[cfg(test)]
mod log_capture;
