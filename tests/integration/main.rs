//! The one integration test binary: protocol bytes to types, the service
//! in-process, and end to end over a real socket with the real binaries.

mod access;
mod aliases;
mod arns;
mod audit;
mod crash;
mod e2e;
mod errors;
mod hsm;
mod http;
mod import;
mod kmsctl;
mod life;
mod lifecycle_model;
mod memory;
mod metrics;
mod protocol;
mod quotas;
mod readiness;
mod seeding;
mod service;
mod states;
mod states_table;
mod store_open;
mod support;
mod trust;
mod vectors;
