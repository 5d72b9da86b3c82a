//! kms-loadgen: the load generator, baselines and regression gate for kmsd.
//!
//! Layout: `workload` (operation mix, key popularity, the pool of prepared
//! request frames), `http` (`--protocol http`: the pool of HTTP/1.1
//! requests of AWS's API, the answer parser, a setup client), `driver`
//! (closed and open loop over a Unix socket for both protocols, and the
//! in-process baseline), `echo` (the minimal echo server), `target`
//! (spawning kmsd, reading its CPU and RSS), `run` (what a run measured),
//! `report` (summary text, JSON, .hgrm), `plot` (SVG latency by percentile),
//! `gate` (ratio comparison against a committed baseline), `regress` (the
//! fixed workload set the gate runs).
#![deny(missing_docs)]

pub mod driver;
pub mod echo;
pub mod gate;
pub mod hsmraw;
pub mod http;
pub mod inprocess;
pub mod plot;
pub mod regress;
pub mod report;
pub mod run;
pub mod target;
pub mod workload;
