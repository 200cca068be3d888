//! Customer (CRM): registered with an e-mail and a name; support adds notes; an admin may
//! erase the customer's personal data (crypto-shredding, ADR 0020).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{types, EventName};
use crate::personal::Personal;
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
    /// Record that the customer's personal data was erased (its data key destroyed).
    Erase {
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
    #[serde(rename = "customer.erased")]
    Erased(CustomerErased),
}

impl EventName for CustomerEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Registered(_) => types::CUSTOMER_REGISTERED,
            Self::NoteAdded(_) => types::CUSTOMER_NOTE_ADDED,
            Self::Erased(_) => types::CUSTOMER_ERASED,
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            // v2: the personal fields may be sealed.
            Self::Registered(_) | Self::NoteAdded(_) => 2,
            Self::Erased(_) => 1,
        }
    }
}

/// A customer was registered. The e-mail, name and phone are personal data: each is in
/// clear or sealed with the customer's data key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerRegistered {
    pub customer_id: Uuid,
    pub email: Personal<Email>,
    pub name: Personal<Text>,
    pub phone: Option<Personal<Text>>,
    pub registered_at: DateTime<Utc>,
}

/// Support added a note to the customer. The text is personal data: in clear or sealed with
/// the customer's data key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerNoteAdded {
    pub customer_id: Uuid,
    pub note_id: Uuid,
    pub text: Personal<Text>,
    pub added_at: DateTime<Utc>,
}

/// The customer's personal data was erased: the key their personal fields were sealed with
/// is destroyed, and readers show "[erased]" in place of each of them. Carries no personal
/// data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerErased {
    pub customer_id: Uuid,
    pub erased_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub id: Uuid,
    pub text: Personal<Text>,
    pub added_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Option<Uuid>,
    pub email: Option<Personal<Email>>,
    pub name: Option<Personal<Text>>,
    pub phone: Option<Personal<Text>>,
    pub notes: Vec<Note>,
    pub registered_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub erased_at: Option<DateTime<Utc>>,
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
                    email: cmd.email.into(),
                    name: cmd.name.into(),
                    phone: cmd.phone.map(Personal::from),
                    registered_at: cmd.registered_at,
                })])
            }
            CustomerCommand::AddNote { note_id, text, at } => {
                let Some(customer_id) = self.id else {
                    return Err(DomainError::NotFound {
                        aggregate: "customer",
                    });
                };
                if self.erased_at.is_some() {
                    return Err(erased());
                }
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
                    text: text.into(),
                    added_at: at,
                })])
            }
            CustomerCommand::Erase { at } => {
                let Some(customer_id) = self.id else {
                    return Err(DomainError::NotFound {
                        aggregate: "customer",
                    });
                };
                if self.erased_at.is_some() {
                    return Err(erased());
                }
                Ok(vec![CustomerEvent::Erased(CustomerErased {
                    customer_id,
                    erased_at: at,
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
            CustomerEvent::Erased(e) => self.erased_at = Some(e.erased_at),
        }
    }
}

/// The refusal of a command on an erased customer (`customer-erased`, 409).
pub fn erased() -> DomainError {
    DomainError::refused("customer-erased", "the customer's personal data was erased")
}
