use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who issued a command: an API key's name and role (or a system component).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub key_id: Option<Uuid>,
    pub name: String,
    pub role: String,
}

/// Metadata stored with every event a command produces (DESIGN.md §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetadata {
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub actor: Actor,
    pub request_id: String,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
}

impl CommandMetadata {
    /// The flat map cqrs-es stores in the `metadata` column.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::with_capacity(9);
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
        m
    }

    /// Idempotency keys are scoped per API key.
    pub fn idempotency_scope(&self) -> String {
        match self.actor.key_id {
            Some(id) => id.to_string(),
            None => format!("system:{}", self.actor.name),
        }
    }
}
