//! Integration tests of the Azure doubles: the ARM DNS API and token endpoint over real HTTP
//! (reqwest), and the authoritative DNS server over real UDP and TCP (hickory-proto), each
//! test with its own doubles on free loopback ports.

mod arm;
mod dns;
mod support;
