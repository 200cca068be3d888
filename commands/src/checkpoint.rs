//! Signed checkpoints of the hash chain (ADR 0019): Ordo signs (position, hash) of the log's
//! last event with an Ed25519 key kept outside the database, and stores the signature in
//! `audit.checkpoints`. A writer who rewrites the log and recomputes every hash, or who cuts
//! its tail, leaves a chain that links, but cannot make the stored hash at a signed position
//! match its signature again ([`crate::audit`] checks).
//!
//! What is signed is [`message`]: the tag `ordo-checkpoint-v1`, the position (big-endian
//! i64), the 32-byte hash and the signing time in microseconds since the Unix epoch
//! (big-endian i64).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::chain::{self, Hash};
use crate::witness;

const TAG: &[u8] = b"ordo-checkpoint-v1";

/// Every signer takes this transaction-level advisory lock (`ordochkp` as a big-endian
/// integer) before it reads the head: signers in several processes take turns, and the
/// second finds the head already signed.
const SIGNING_LOCK: i64 = 0x6f72_646f_6368_6b70;

/// A key that is not an Ed25519 key as Ordo takes it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("{0} bytes: an Ed25519 key is 32 bytes")]
    Length(usize),
    #[error("not a valid Ed25519 public key")]
    Invalid,
}

fn key_bytes(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = BASE64.decode(text.trim())?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Length(bytes.len()))
}

/// A public key from its base64 text (`ORDO_AUDIT_PUBLIC_KEY`, `--public-key`).
pub fn public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_bytes(&key_bytes(text)?).map_err(|_| KeyError::Invalid)
}

/// A public key verification trusts, under a name reports use: the name given in the trust
/// list (`name=base64`), else the key's base64 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub name: String,
    pub key: VerifyingKey,
}

impl TrustedKey {
    /// An unnamed key: named by its base64 text.
    pub fn unnamed(key: VerifyingKey) -> Self {
        Self {
            name: public_key_text(&key),
            key,
        }
    }
}

/// A trust list (`ORDO_AUDIT_PUBLIC_KEY`, `--public-key`): comma-separated public keys, each
/// base64 or `name=base64`, so that checkpoints signed by a retired key still verify beside
/// those of the current one. Blank items are skipped; names and keys must not repeat.
pub fn trusted_keys(text: &str) -> Result<Vec<TrustedKey>, String> {
    let mut keys: Vec<TrustedKey> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        // A bare key may end in `=` (base64 padding): try it whole before splitting a name.
        let key = match public_key(item) {
            Ok(key) => TrustedKey::unnamed(key),
            Err(whole) => match item.split_once('=') {
                Some((name, key)) if !name.trim().is_empty() => TrustedKey {
                    name: name.trim().to_owned(),
                    key: public_key(key).map_err(|e| format!("key {:?}: {e}", name.trim()))?,
                },
                _ => return Err(format!("{item:?}: {whole}")),
            },
        };
        if let Some(twin) = keys.iter().find(|k| k.name == key.name || k.key == key.key) {
            return Err(format!(
                "{:?} repeats the name or the key of {:?}",
                key.name, twin.name
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// A public key as base64 text, the form [`public_key`] reads.
pub fn public_key_text(key: &VerifyingKey) -> String {
    BASE64.encode(key.as_bytes())
}

/// The signing key, and the witness file each checkpoint it signs is copied to
/// ([`crate::witness`]). `Debug` shows only the public half.
#[derive(Clone)]
pub struct Signer {
    key: Arc<SigningKey>,
    witness: Option<PathBuf>,
}

impl Signer {
    /// From the base64 of a 32-byte seed (`head -c 32 /dev/urandom | base64`).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self {
            key: Arc::new(SigningKey::from_bytes(&key_bytes(text)?)),
            witness: None,
        })
    }

    /// The same key, appending every checkpoint it signs to the witness file at `path`
    /// (`ORDO_AUDIT_WITNESS_FILE`).
    pub fn witnessed_in(self, path: impl Into<PathBuf>) -> Self {
        Self {
            witness: Some(path.into()),
            ..self
        }
    }

    /// The witness file, if any.
    pub fn witness(&self) -> Option<&Path> {
        self.witness.as_deref()
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    fn sign(&self, message: &[u8]) -> Signature {
        self.key.sign(message)
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", public_key_text(&self.public_key()))
    }
}

/// The keys a process holds: the signer (`ORDO_AUDIT_SIGNING_KEY`), and the public keys
/// verification trusts (`ORDO_AUDIT_PUBLIC_KEY`'s list, else the signer's alone; empty:
/// signatures are not checked).
#[derive(Debug, Clone, Default)]
pub struct AuditKeys {
    pub signer: Option<Signer>,
    pub trusted: Vec<TrustedKey>,
}

impl AuditKeys {
    pub fn new(signer: Option<Signer>, public_keys: Vec<TrustedKey>) -> Self {
        let trusted = if public_keys.is_empty() {
            signer
                .as_ref()
                .map(|s| TrustedKey::unnamed(s.public_key()))
                .into_iter()
                .collect()
        } else {
            public_keys
        };
        Self { signer, trusted }
    }
}

/// The bytes a checkpoint's signature covers.
pub fn message(position: i64, hash: &Hash, signed_at: DateTime<Utc>) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG.len() + 8 + 32 + 8);
    m.extend_from_slice(TAG);
    m.extend_from_slice(&position.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&signed_at.timestamp_micros().to_be_bytes());
    m
}

/// One stored checkpoint, as read back (nothing in it is trusted until checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: i64,
    pub position: i64,
    pub hash: Vec<u8>,
    pub signature: Vec<u8>,
    pub public_key: Vec<u8>,
    pub signed_at: DateTime<Utc>,
}

/// Why a checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Signed (or claimed) by another key than the one verification trusts.
    OtherKey,
    /// The signature does not match the position, hash and time for the trusted key.
    BadSignature,
}

impl Checkpoint {
    /// Whether the signature is one trusted key's over this checkpoint's fields: the hash
    /// it certifies and the index in `trusted` of the key that signed it.
    pub fn check_any(&self, trusted: &[TrustedKey]) -> Result<(Hash, usize), Invalid> {
        let index = trusted
            .iter()
            .position(|t| self.public_key.as_slice() == t.key.as_bytes())
            .ok_or(Invalid::OtherKey)?;
        Ok((self.check(&trusted[index].key)?, index))
    }

    /// Whether the signature is the trusted key's over this checkpoint's fields.
    pub fn check(&self, trusted: &VerifyingKey) -> Result<Hash, Invalid> {
        if self.public_key.as_slice() != trusted.as_bytes() {
            return Err(Invalid::OtherKey);
        }
        let hash = Hash::try_from(self.hash.as_slice()).map_err(|_| Invalid::BadSignature)?;
        let signature =
            Signature::from_slice(&self.signature).map_err(|_| Invalid::BadSignature)?;
        trusted
            .verify_strict(&message(self.position, &hash, self.signed_at), &signature)
            .map_err(|_| Invalid::BadSignature)?;
        Ok(hash)
    }
}

/// What [`sign`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    New(Checkpoint),
    /// The head was signed already (by this key): nothing was appended since.
    Unchanged(Checkpoint),
    /// No chained event to sign yet (an empty log, or only events before the chain).
    Empty,
}

/// Why [`sign`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The checkpoint is signed and stored, but its witness line could not be written: the
    /// witness lacks it (verification with the witness simply does not know it).
    #[error(
        "signed checkpoint #{id} but could not append it to the witness file {path}: {source}"
    )]
    Witness {
        id: i64,
        path: String,
        source: std::io::Error,
    },
}

/// Sign the log's last event unless this key signed it already; a new checkpoint is
/// appended to the signer's witness file, if it has one, once it is committed.
pub async fn sign(pool: &PgPool, signer: &Signer) -> Result<Signed, SignError> {
    let signed = sign_head(pool, signer).await?;
    if let (Signed::New(c), Some(path)) = (&signed, signer.witness()) {
        witness::append(path, c).map_err(|source| SignError::Witness {
            id: c.id,
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(signed)
}

async fn sign_head(pool: &PgPool, signer: &Signer) -> Result<Signed, sqlx::Error> {
    let public = signer.public_key();
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SIGNING_LOCK)
        .execute(&mut *tx)
        .await?;
    let head: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT global_position, hash FROM event_store.events
          ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((position, Some(hash))) = head else {
        return Ok(Signed::Empty);
    };
    let Ok(hash) = Hash::try_from(hash.as_slice()) else {
        return Ok(Signed::Empty);
    };
    let last: Option<Checkpoint> = sqlx::query_as(
        "SELECT id, position, hash, signature, public_key, signed_at FROM audit.checkpoints
          WHERE public_key = $1 ORDER BY position DESC, id DESC LIMIT 1",
    )
    .bind(public.as_bytes().as_slice())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(last) = last.filter(|c| c.position == position && c.hash == hash) {
        return Ok(Signed::Unchanged(last));
    }
    let signed_at = chain::to_micros(Utc::now());
    let signature = signer.sign(&message(position, &hash, signed_at));
    let checkpoint: Checkpoint = sqlx::query_as(
        "INSERT INTO audit.checkpoints (position, hash, signature, public_key, signed_at)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, position, hash, signature, public_key, signed_at",
    )
    .bind(position)
    .bind(hash.as_slice())
    .bind(signature.to_bytes().as_slice())
    .bind(public.as_bytes().as_slice())
    .bind(signed_at)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Signed::New(checkpoint))
}

/// Every stored checkpoint, by position.
pub async fn all(pool: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, position, hash, signature, public_key, signed_at FROM audit.checkpoints
          ORDER BY position, id",
    )
    .fetch_all(pool)
    .await
}

/// The latest `limit` checkpoints, newest first.
pub async fn latest(pool: &PgPool, limit: i64) -> Result<Vec<Checkpoint>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, position, hash, signature, public_key, signed_at FROM audit.checkpoints
          ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for Checkpoint {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            id: row.try_get("id")?,
            position: row.try_get("position")?,
            hash: row.try_get("hash")?,
            signature: row.try_get("signature")?,
            public_key: row.try_get("public_key")?,
            signed_at: row.try_get("signed_at")?,
        })
    }
}

/// Sign the head every `every` until `stopped`, skipping when nothing was appended. Every
/// process with the key runs this; [`SIGNING_LOCK`] makes them take turns, so a head is
/// signed once.
pub async fn run(
    pool: PgPool,
    signer: Signer,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
        match sign(&pool, &signer).await {
            Ok(Signed::New(c)) => {
                tracing::info!(
                    checkpoint.id = c.id,
                    checkpoint.position = c.position,
                    "signed a checkpoint"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sign a checkpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn checkpoint(signer: &Signer, position: i64, hash: Hash) -> Checkpoint {
        let signed_at = DateTime::from_timestamp_micros(1_700_000_000_000_001).unwrap();
        Checkpoint {
            id: 1,
            position,
            hash: hash.to_vec(),
            signature: signer
                .sign(&message(position, &hash, signed_at))
                .to_bytes()
                .to_vec(),
            public_key: signer.public_key().as_bytes().to_vec(),
            signed_at,
        }
    }

    #[test]
    fn a_signed_checkpoint_holds_only_for_its_own_fields_and_key() {
        let signer = Signer::from_base64(&BASE64.encode([7u8; 32])).unwrap();
        let other = Signer::from_base64(&BASE64.encode([8u8; 32])).unwrap();
        let good = checkpoint(&signer, 42, [1; 32]);
        assert_eq!(good.check(&signer.public_key()), Ok([1; 32]));
        assert_eq!(good.check(&other.public_key()), Err(Invalid::OtherKey));
        let moved = Checkpoint {
            position: 41,
            ..good.clone()
        };
        assert_eq!(
            moved.check(&signer.public_key()),
            Err(Invalid::BadSignature)
        );
        let rehashed = Checkpoint {
            hash: vec![2; 32],
            ..good.clone()
        };
        assert_eq!(
            rehashed.check(&signer.public_key()),
            Err(Invalid::BadSignature)
        );
        // Another key's signature, relabelled with the trusted key, does not hold either.
        let forged = Checkpoint {
            public_key: signer.public_key().as_bytes().to_vec(),
            ..checkpoint(&other, 42, [1; 32])
        };
        assert_eq!(
            forged.check(&signer.public_key()),
            Err(Invalid::BadSignature)
        );
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(matches!(
            Signer::from_base64("not base64!"),
            Err(KeyError::Base64(_))
        ));
        assert!(matches!(
            Signer::from_base64(&BASE64.encode([1u8; 16])),
            Err(KeyError::Length(16))
        ));
        let signer = Signer::from_base64(&format!(" {}\n", BASE64.encode([3u8; 32]))).unwrap();
        let text = public_key_text(&signer.public_key());
        assert_eq!(public_key(&text).unwrap(), signer.public_key());
        assert!(!format!("{signer:?}").contains(&BASE64.encode([3u8; 32])));
    }

    #[test]
    fn a_trust_list_takes_bare_and_named_keys_and_refuses_repeats_and_bad_keys() {
        let a = public_key_text(
            &Signer::from_base64(&BASE64.encode([7u8; 32]))
                .unwrap()
                .public_key(),
        );
        let b = public_key_text(
            &Signer::from_base64(&BASE64.encode([8u8; 32]))
                .unwrap()
                .public_key(),
        );
        let keys = trusted_keys(&format!(" {a} , retired={b},")).unwrap();
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, [a.as_str(), "retired"]);
        assert_eq!(public_key_text(&keys[1].key), b);
        assert!(trusted_keys("").unwrap().is_empty());
        assert!(
            trusted_keys(&format!("{a},x={a}")).is_err(),
            "same key twice"
        );
        assert!(
            trusted_keys(&format!("x={a},x={b}")).is_err(),
            "same name twice"
        );
        let bad = trusted_keys("x=bm90IGEga2V5").unwrap_err();
        assert!(bad.contains("\"x\""), "{bad}");
        assert!(trusted_keys("not base64 at all").is_err());
    }
}
