//! The log as evidence: the audit trail, the hash chain against tampering, signed
//! checkpoints, verifications, and personal data sealed and erased.

pub mod checkpoints;
pub mod privacy;
pub mod privacy_e2e;
pub mod sealed_read_models;
pub mod tamper;
pub mod trail;
pub mod verifications;
pub mod witness;
