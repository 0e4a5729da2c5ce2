//! End-to-end tests: the real `opsh` binary against a real lab (PostgreSQL 15 over TLS with
//! scram passwords, OpenSSH, lab services), one lab per test on its own loopback block.

mod support;

mod capabilities;
mod doctor;
mod engine;
mod errors;
mod examples;
mod faults;
mod gather;
mod horizon;
mod horizon_shapes;
mod hostile;
mod import;
mod json;
mod lab_drills;
mod otb;
mod otb_lab;
mod otb_shapes;
mod package;
mod sandbox;
mod scale;
mod shapes;
mod shell;
mod team;
mod tungsten;
mod tungsten_shapes;
mod wit_v2;
mod xdb;
mod xdb_shapes;
