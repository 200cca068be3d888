//! Read models built from the gap-free event feed: orders, payments and the CRM customer
//! 360, each kept by a runner that one process at a time leads, rebuilt without downtime.
//!
//! This crate owns the `projections` and `projections_rebuild` schemas; the API reads them
//! only through [`queries`],
//! which answer the [`views`]: one type per response, also the OpenAPI document's schema.

pub mod check;
pub mod customers;
#[cfg(test)]
mod fixtures;
pub mod model;
pub mod orders;
pub mod payments;
pub mod queries;
pub mod rebuild;
pub mod runner;
pub mod sealing;
pub mod shared;
pub mod status;
pub mod views;

pub use model::{ApplyError, Projection, Version};
pub use rebuild::Rebuilder;
pub use runner::{Runner, RunnerConfig, Step};
pub use shared::SharedFeed;
