//! data-ingest against a real PostgreSQL: every endpoint, good and bad input, standby
//! behaviour, readiness across a database restart, graceful shutdown of the real binary.

mod binary;
mod endpoints;
mod group;
mod helpers;
mod hostile;
mod resilience;
