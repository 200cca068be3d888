//! The console in a real headless Chromium.

pub mod operators;
pub mod pages;
