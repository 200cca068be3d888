//! The read models: the feed and the projection runner, rebuilds, and the views over HTTP.

pub mod projector;
pub mod queries;
pub mod rebuilds;
