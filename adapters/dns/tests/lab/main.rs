//! Integration tests of drd-dns against the lab doubles (ARM + token endpoint, authoritative
//! DNS server), with the real azure_identity client-secret flow. One test binary; each test
//! starts its own doubles on free loopback ports, so they run in parallel.

mod concurrency;
mod failures;
mod secrets;
mod support;
mod switch;
mod ttl;
