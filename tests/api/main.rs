//! End-to-end tests of the HTTP API against real PostgreSQL: one fresh database per test.
//! One folder per stage of the data flow a test exercises (docs/ARCHITECTURE.md, "Tests");
//! `helpers`, `nats` and `browser` are the set-ups they share.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod browser;
mod helpers;
mod nats;

mod audit;
mod commands;
mod console;
mod operations;
mod read_models;
mod workers;
