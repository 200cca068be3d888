//! The master keys: given to the process (never stored in the database), versioned so they
//! can be rotated.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::seal::DataKey;

/// Bytes of a wrapped data key: nonce (12), ciphertext (32), tag (16).
const WRAPPED_LEN: usize = 60;

/// One master key and its version (recorded beside every key it wraps). `Debug` never shows
/// the key.
#[derive(Clone)]
pub struct MasterKey {
    version: i32,
    key: [u8; 32],
    /// The key of the e-mail blind index, derived from this master key (HKDF-SHA256).
    index_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey {{ version: {}, key: *** }}", self.version)
    }
}

impl MasterKey {
    /// A master key from its base64 text (32 bytes, standard alphabet, padded or not);
    /// `version` ≥ 1.
    pub fn parse(version: i32, base64_key: &str) -> Result<Self, String> {
        if version < 1 {
            return Err(format!("master key version {version} must be at least 1"));
        }
        let text = base64_key.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| format!("master key version {version} is not base64"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "master key version {version} is {} bytes; it must be 32 (base64 of 32 random bytes)",
                b.len()
            )
        })?;
        let mut index_key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(None, &key)
            .expand(b"ordo e-mail blind index v1", &mut index_key)
            .map_err(|_| "HKDF output length".to_owned())?;
        Ok(Self {
            version,
            key,
            index_key,
        })
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.key))
    }

    /// The data key sealed under this master key, bound to its customer.
    pub(super) fn wrap(&self, customer: Uuid, data_key: &DataKey) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: data_key.bytes(),
            aad: customer.as_bytes(),
        };
        let mut wrapped = nonce.to_vec();
        // Encryption into a Vec fails only on a message beyond AES-GCM's limit.
        if let Ok(ciphertext) = self.cipher().encrypt(&nonce, payload) {
            wrapped.extend(ciphertext);
        }
        wrapped
    }

    /// The data key `wrapped` holds, if this master key wrapped it for this customer.
    pub(super) fn unwrap(&self, customer: Uuid, wrapped: &[u8]) -> Option<DataKey> {
        if wrapped.len() != WRAPPED_LEN {
            return None;
        }
        let (nonce, ciphertext) = wrapped.split_at(12);
        let payload = Payload {
            msg: ciphertext,
            aad: customer.as_bytes(),
        };
        let bytes = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .ok()?;
        DataKey::from_bytes(&bytes)
    }

    /// The blind index of an e-mail address: HMAC-SHA256 over its normalized form (trimmed,
    /// lower case), keyed with this master key's index key.
    pub fn email_digest(&self, email: &str) -> Vec<u8> {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.index_key) else {
            return Vec::new();
        };
        mac.update(email.trim().to_lowercase().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// The current master key (new keys are wrapped with it) and older ones still accepted for
/// unwrapping during a rotation.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl MasterKeys {
    /// `previous` must not repeat the current version or each other.
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Result<Self, String> {
        let mut versions: Vec<i32> = previous.iter().map(MasterKey::version).collect();
        versions.push(current.version);
        versions.sort_unstable();
        if versions.windows(2).any(|w| w[0] == w[1]) {
            return Err("two master keys have the same version".into());
        }
        Ok(Self { current, previous })
    }

    /// `VERSION:BASE64` entries separated by commas (ORDO_PREVIOUS_MASTER_KEYS).
    pub fn parse_previous(list: &str) -> Result<Vec<MasterKey>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (version, key) = entry.split_once(':').ok_or_else(|| {
                    "ORDO_PREVIOUS_MASTER_KEYS entries are VERSION:BASE64".to_owned()
                })?;
                let version = version.trim().parse().map_err(|_| {
                    format!("ORDO_PREVIOUS_MASTER_KEYS: `{version}` is not a version number")
                })?;
                MasterKey::parse(version, key)
            })
            .collect()
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The master key of `version`, if it was given.
    pub fn get(&self, version: i32) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.version == version)
    }

    /// Every key given, current first.
    pub fn all(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn a_wrapped_key_unwraps_only_with_its_master_key_and_customer() {
        let master = MasterKey::parse(1, &key(7)).unwrap();
        let other = MasterKey::parse(2, &key(8)).unwrap();
        let (customer, data_key) = (Uuid::now_v7(), DataKey::generate());
        let wrapped = master.wrap(customer, &data_key);
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        assert_eq!(master.unwrap(customer, &wrapped), Some(data_key.clone()));
        assert_eq!(other.unwrap(customer, &wrapped), None);
        assert_eq!(master.unwrap(Uuid::now_v7(), &wrapped), None);
    }

    #[test]
    fn a_master_key_must_be_32_bytes_of_base64_and_is_never_printed() {
        assert!(MasterKey::parse(1, "c2hvcnQ=").unwrap_err().contains("32"));
        assert!(MasterKey::parse(1, "not base64!").is_err());
        assert!(MasterKey::parse(0, &key(1)).is_err());
        let debug = format!("{:?}", MasterKey::parse(3, &key(1)).unwrap());
        assert!(
            !debug.contains(&key(1)) && debug.contains("version: 3"),
            "{debug}"
        );
    }

    #[test]
    fn the_blind_index_ignores_case_and_blanks_and_depends_on_the_key() {
        let one = MasterKey::parse(1, &key(1)).unwrap();
        let two = MasterKey::parse(2, &key(2)).unwrap();
        assert_eq!(
            one.email_digest("Ada@Example.com "),
            one.email_digest("ada@example.com")
        );
        assert_ne!(
            one.email_digest("ada@example.com"),
            two.email_digest("ada@example.com")
        );
        assert_eq!(one.email_digest("ada@example.com").len(), 32);
    }

    #[test]
    fn previous_master_keys_are_listed_as_version_and_key() {
        let previous = MasterKeys::parse_previous(&format!("1:{}, 2:{}", key(1), key(2))).unwrap();
        let keys = MasterKeys::new(MasterKey::parse(3, &key(3)).unwrap(), previous).unwrap();
        assert_eq!(
            keys.all().map(MasterKey::version).collect::<Vec<_>>(),
            [3, 1, 2]
        );
        assert!(keys.get(2).is_some() && keys.get(4).is_none());
        let twice = MasterKeys::new(
            MasterKey::parse(1, &key(3)).unwrap(),
            MasterKeys::parse_previous(&format!("1:{}", key(1))).unwrap(),
        );
        assert!(twice.is_err());
    }
}
