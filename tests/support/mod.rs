//! Test support: a private D-Bus bus and a mock BlueZ for btleplug, plus device payloads.
//! Integration tests use it with `mod support;`; examples with
//! `#[path = "../tests/support/mod.rs"] mod support;`.

#![allow(dead_code)]

pub mod bus;
pub mod fixtures;
pub mod mock_bluez;
