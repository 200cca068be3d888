//! The witness of signed checkpoints (ADR 0019): a copy of every checkpoint Ordo signs, one
//! JSON line each, in a file outside the database (`ORDO_AUDIT_WITNESS_FILE`). A writer who
//! can change the database but not this file can delete checkpoint rows and then rewrite the
//! log after the last one left, and the database alone would not notice; the witness still
//! names the deleted checkpoints, and `ordo audit verify --witness FILE` checks each of them
//! against the chain ([`crate::audit::verify_witnessed`]).
//!
//! A line holds the fields the signature covers and the public key:
//! `{"position", "hash" (hex), "signature" (base64), "public_key" (base64), "signed_at"}`.
//! Lines are appended with one `write` each to a file opened for appending, so processes
//! signing in turn ([`crate::checkpoint`]'s lock) do not interleave their lines.

use std::io::Write as _;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;

/// One witnessed checkpoint, as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub position: i64,
    /// Hex.
    pub hash: String,
    /// Base64.
    pub signature: String,
    /// Base64.
    pub public_key: String,
    pub signed_at: DateTime<Utc>,
}

impl From<&Checkpoint> for Line {
    fn from(c: &Checkpoint) -> Self {
        Self {
            position: c.position,
            hash: hex::encode(&c.hash),
            signature: BASE64.encode(&c.signature),
            public_key: BASE64.encode(&c.public_key),
            signed_at: c.signed_at,
        }
    }
}

/// A witness file that cannot be read as one.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("witness file {path}, line {line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: String,
    },
}

/// `checkpoint` as its witness line, without the line break.
pub fn line(checkpoint: &Checkpoint) -> String {
    serde_json::to_string(&Line::from(checkpoint)).unwrap_or_default()
}

/// Append `checkpoint`'s line to the file at `path` (created if missing) and flush it to
/// disk before returning.
pub fn append(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(format!("{}\n", line(checkpoint)).as_bytes())?;
    file.sync_data()
}

/// Every checkpoint in the witness file at `path`, in file order, as checkpoints without a
/// database id (`id` 0). Blank lines are skipped; any other line that is not a witness line
/// is an error naming it, never skipped.
pub fn read(path: &Path) -> Result<Vec<Checkpoint>, WitnessError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WitnessError::Io {
        path: shown.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            parse(l).map_err(|problem| WitnessError::Line {
                path: shown.clone(),
                line: i + 1,
                problem,
            })
        })
        .collect()
}

fn parse(text: &str) -> Result<Checkpoint, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(Checkpoint {
        id: 0,
        position: line.position,
        hash: hex::decode(&line.hash).map_err(|e| format!("hash: {e}"))?,
        signature: BASE64
            .decode(&line.signature)
            .map_err(|e| format!("signature: {e}"))?,
        public_key: BASE64
            .decode(&line.public_key)
            .map_err(|e| format!("public_key: {e}"))?,
        signed_at: line.signed_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            id: 7,
            position: 42,
            hash: vec![1; 32],
            signature: vec![2; 64],
            public_key: vec![3; 32],
            signed_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
        }
    }

    #[test]
    fn a_line_reads_back_as_the_checkpoint_it_witnessed_without_its_row_id() {
        let dir = std::env::temp_dir().join(format!("ordo-witness-{}", uuid::Uuid::new_v4()));
        let c = checkpoint();
        append(&dir, &c).unwrap();
        append(
            &dir,
            &Checkpoint {
                position: 43,
                ..c.clone()
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&dir).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with(r#"{"position":42,"hash":"0101"#), "{text}");
        let back = read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(back[0], Checkpoint { id: 0, ..c });
        assert_eq!(back[1].position, 43);
    }

    #[test]
    fn a_line_that_is_not_a_witness_line_is_named() {
        let dir = std::env::temp_dir().join(format!("ordo-witness-{}", uuid::Uuid::new_v4()));
        let good = line(&checkpoint());
        std::fs::write(&dir, format!("{good}\n\n{{\"position\":1}}\n")).unwrap();
        let err = read(&dir).unwrap_err().to_string();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.contains("line 3"), "{err}");
    }
}
