//! JK BMS (JK02 protocol, 24S and 32S layouts). So far its pure protocol only: the kind (a
//! session, fields, demo, `Kind` entry) is not registered yet.

pub mod protocol;
