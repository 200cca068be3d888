//! The NATS relay, workers and process manager (the NATS issue).
