//! Victron instant readout (SmartShunt, BMV-71x, SmartSolar): passive, from encrypted
//! advertisements. So far its pure protocol only: the kind needs a passive path through the
//! transport (a running scan, manufacturer data per address), not built yet, so it is not
//! registered.

pub mod protocol;
