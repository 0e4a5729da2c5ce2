//! The opsh lab: real PostgreSQL 15 and OpenSSH servers on loopback, one mount namespace per lab
//! host, built from topology files; used by `scripts/lab`, `scripts/demo` and the end-to-end tests.

pub mod lab;
pub mod otb_proxy;
pub mod procs;
pub mod slony;
pub mod topology;
pub mod tungsten;
pub mod xdb;

pub use lab::Lab;
pub use topology::Topology;
