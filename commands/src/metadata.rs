use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::appender::Answer;

/// Who issued a command: an API key's name and role (or a system component).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub key_id: Option<Uuid>,
    pub name: String,
    pub role: String,
}

/// Metadata stored with every event a command produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetadata {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor: Actor,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    /// With `idempotency_key`: the request's fingerprint and its success status, so that the
    /// answer is stored in the same transaction as the events.
    pub idempotent: Option<IdempotentRequest>,
    pub traceparent: Option<String>,
    /// The channel the command acts in. A command that creates a stream records it in this
    /// channel ([`crate::channels::DEFAULT`] when `None`); a command on an existing stream
    /// with `Some` finds only streams of this channel (another channel's stream is "not
    /// found"), and with `None` (a global key, a system component) any stream. Either way
    /// the events record their stream's channel.
    pub channel: Option<String>,
}

/// What the store needs to record an `Idempotency-Key` request's answer with its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    pub request_hash: String,
    pub success_status: u16,
}

impl CommandMetadata {
    /// The flat map cqrs-es stores in the `metadata` column.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::with_capacity(10);
        m.insert("correlation_id".into(), self.correlation_id.to_string());
        m.insert("causation_id".into(), self.causation_id.to_string());
        m.insert("actor_name".into(), self.actor.name.clone());
        m.insert("actor_role".into(), self.actor.role.clone());
        if let Some(key_id) = self.actor.key_id {
            m.insert("actor_key_id".into(), key_id.to_string());
        }
        m.insert("request_id".into(), self.request_id.clone());
        if let Some(key) = &self.idempotency_key {
            m.insert("idempotency_key".into(), key.clone());
            m.insert("idempotency_scope".into(), self.idempotency_scope());
        }
        if let Some(tp) = &self.traceparent {
            m.insert("traceparent".into(), tp.clone());
        }
        m.insert(
            "channel".into(),
            self.channel
                .clone()
                .unwrap_or_else(|| crate::channels::DEFAULT.to_owned()),
        );
        m
    }

    /// The answer record to commit with the events, for a request with an idempotency key.
    pub fn answer(&self) -> Option<Answer> {
        let (key, request) = (self.idempotency_key.as_ref()?, self.idempotent.as_ref()?);
        Some(Answer {
            scope: self.idempotency_scope(),
            key: key.clone(),
            request_hash: request.request_hash.clone(),
            status: request.success_status,
            body: None,
        })
    }

    /// Idempotency keys are scoped per API key.
    pub fn idempotency_scope(&self) -> String {
        match self.actor.key_id {
            Some(id) => id.to_string(),
            None => format!("system:{}", self.actor.name),
        }
    }
}
