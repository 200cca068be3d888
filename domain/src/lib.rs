//! The Ordo domain: orders, payments and customers.
//!
//! Every decision is a plain function `state + command → events | DomainError`. Nothing
//! here does I/O, reads a clock or draws a random number: ids and times arrive inside the
//! commands. The cqrs-es `Aggregate` impls in [`aggregate`] only adapt these functions.

pub mod aggregate;
pub mod customer;
pub mod error;
pub mod event;
pub mod money;
pub mod openapi;
pub mod order;
pub mod payment;
pub mod personal;
pub mod schema;
pub mod values;

pub use error::{DomainError, ValueError};
pub use money::{Amount, Currency};
