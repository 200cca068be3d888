//! Customer (CRM): registered with an e-mail and a name; support adds notes.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{types, EventName};
use crate::values::{Email, Text};
use crate::DomainError;

#[cfg(test)]
mod tests;

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    Register(RegisterCustomer),
    AddNote {
        note_id: Uuid,
        text: Text,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegisterCustomer {
    pub customer_id: Uuid,
    pub email: Email,
    pub name: Text,
    pub phone: Option<Text>,
    pub registered_at: DateTime<Utc>,
}

// The shapes and doc comments of the event types are the released JSON Schemas in
// schemas/events/: changing either is a new schema version (README, "Schemas").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum CustomerEvent {
    #[serde(rename = "customer.registered")]
    Registered(CustomerRegistered),
    #[serde(rename = "customer.note_added")]
    NoteAdded(CustomerNoteAdded),
}

impl EventName for CustomerEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Registered(_) => types::CUSTOMER_REGISTERED,
            Self::NoteAdded(_) => types::CUSTOMER_NOTE_ADDED,
        }
    }
}

/// A customer was registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerRegistered {
    pub customer_id: Uuid,
    pub email: Email,
    pub name: Text,
    pub phone: Option<Text>,
    pub registered_at: DateTime<Utc>,
}

/// Support added a note to the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerNoteAdded {
    pub customer_id: Uuid,
    pub note_id: Uuid,
    pub text: Text,
    pub added_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub id: Uuid,
    pub text: Text,
    pub added_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Option<Uuid>,
    pub email: Option<Email>,
    pub name: Option<Text>,
    pub phone: Option<Text>,
    pub notes: Vec<Note>,
    pub registered_at: Option<DateTime<Utc>>,
}

/// At most this many notes per customer: every command on a customer loads its whole
/// stream, so a customer's notes must stay bounded (500 notes of up to 2,000 characters is
/// at most about 1 MB to fold).
pub const MAX_NOTES: usize = 500;

impl Customer {
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// Decide what a command means for this customer, or why it is refused.
    pub fn decide(&self, command: CustomerCommand) -> Result<Vec<CustomerEvent>, DomainError> {
        let decided = self.decide_events(command);
        #[cfg(test)]
        crate::schema::conformance::check(&decided);
        decided
    }

    fn decide_events(&self, command: CustomerCommand) -> Result<Vec<CustomerEvent>, DomainError> {
        match command {
            CustomerCommand::Register(cmd) => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists {
                        aggregate: "customer",
                    });
                }
                Ok(vec![CustomerEvent::Registered(CustomerRegistered {
                    customer_id: cmd.customer_id,
                    email: cmd.email,
                    name: cmd.name,
                    phone: cmd.phone,
                    registered_at: cmd.registered_at,
                })])
            }
            CustomerCommand::AddNote { note_id, text, at } => {
                let Some(customer_id) = self.id else {
                    return Err(DomainError::NotFound {
                        aggregate: "customer",
                    });
                };
                if self.notes.iter().any(|n| n.id == note_id) {
                    return Err(DomainError::refused(
                        "note-already-added",
                        "a note with this id is already on the customer",
                    ));
                }
                if self.notes.len() >= MAX_NOTES {
                    return Err(DomainError::refused(
                        "too-many-notes",
                        format!("a customer takes at most {MAX_NOTES} notes"),
                    ));
                }
                Ok(vec![CustomerEvent::NoteAdded(CustomerNoteAdded {
                    customer_id,
                    note_id,
                    text,
                    added_at: at,
                })])
            }
        }
    }

    pub fn apply(&mut self, event: CustomerEvent) {
        match event {
            CustomerEvent::Registered(e) => {
                self.id = Some(e.customer_id);
                self.email = Some(e.email);
                self.name = Some(e.name);
                self.phone = e.phone;
                self.registered_at = Some(e.registered_at);
            }
            CustomerEvent::NoteAdded(e) => self.notes.push(Note {
                id: e.note_id,
                text: e.text,
                added_at: e.added_at,
            }),
        }
    }
}
