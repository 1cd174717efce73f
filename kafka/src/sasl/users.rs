//! The SASL users: `users.json` in the data directory, one SCRAM credential per
//! user and mechanism, read at start and shared by every core, changed as a
//! [`SharedFile`] (durably, before a change is answered or used).
//!
//! Never: holds a password (see [`Credential`]), or more than [`USERS_MAX`] users.

use super::scram::{Credential, Scram};
use crate::error::KafkaError;
use crate::shared_file::SharedFile;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

// Made-up salts are cut from an HMAC-SHA-256 (32 bytes).
const _: () = assert!(super::scram::SALT_BYTES <= 32);

/// Users the file may hold.
pub const USERS_MAX: usize = 10_000;

/// Longest user name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;

/// The file's name in the data directory.
pub const FILE: &str = "users.json";

/// Every user's credentials, by name and mechanism.
pub type Table = BTreeMap<String, BTreeMap<Scram, Credential>>;

#[derive(serde::Serialize, serde::Deserialize, Default, Clone, PartialEq)]
struct OnDisk {
    users: Table,
    /// The key made-up salts come from (see [`Users::fake_salt`]): kept, so that a
    /// name that is not a user shows the same salt across restarts, as a user's does.
    #[serde(default, with = "super::scram::base64_bytes")]
    fake_salt_key: Vec<u8>,
}

/// The users of one server.
pub struct Users {
    file: Arc<SharedFile<OnDisk>>,
    /// Made-up salts for names that are not users come from this key.
    fake_salt_key: Vec<u8>,
}

impl Users {
    /// The users in `data_dir` (none when it holds no users file). Blocking: for
    /// start-up and the `users` command, never a serving core.
    pub fn open(data_dir: &Path) -> Result<Users, KafkaError> {
        let mut file = SharedFile::<OnDisk>::open(&data_dir.join(FILE), "a users file")?;
        // Made once, written with the first change.
        file.init(|disk| {
            if disk.fake_salt_key.is_empty() {
                disk.fake_salt_key = super::scram::random_bytes(32);
            }
        });
        let fake_salt_key = file.get().fake_salt_key.clone();
        Ok(Users {
            file: Arc::new(file),
            fake_salt_key,
        })
    }

    /// Every user now.
    pub fn table(&self) -> Table {
        self.file.get().users.clone()
    }

    /// `user`'s credential for `mechanism`.
    pub fn credential(&self, user: &str, mechanism: Scram) -> Option<Credential> {
        self.file.get().users.get(user)?.get(&mechanism).cloned()
    }

    /// The salt an exchange shows for a name that is not a user: as long as a real
    /// one, and the same each time (across restarts too).
    pub fn fake_salt(&self, user: &str) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.fake_salt_key);
        ring::hmac::sign(&key, user.as_bytes()).as_ref()[..super::scram::SALT_BYTES].to_vec()
    }

    /// The credential PLAIN checks a password against: the strongest the user has
    /// (so a password set for SCRAM-SHA-512 is the PLAIN password); for a name that
    /// is not a user, a made-up one, so that the check costs the same.
    pub fn plain_credential(&self, user: &str) -> (Scram, Credential, bool) {
        let disk = self.file.get();
        if let Some((m, c)) = disk
            .users
            .get(user)
            .and_then(|creds| creds.iter().next_back())
        {
            return (*m, c.clone(), true);
        }
        let fake = Credential {
            salt: self.fake_salt(user),
            iterations: super::scram::ITERATIONS_MIN,
            stored_key: vec![0; Scram::Sha512.key_len()],
            server_key: Vec::new(),
        };
        (Scram::Sha512, fake, false)
    }

    /// Applies `change` to a copy of the users and writes it durably (see
    /// [`SharedFile::change_blocking`]). Blocking: [`Users::change`] on a core.
    pub fn change_blocking<R>(
        &self,
        change: impl FnOnce(&mut Table) -> R,
    ) -> Result<R, KafkaError> {
        self.file
            .change_blocking(|disk| limited(change(&mut disk.users), &disk.users))
    }

    /// [`Users::change_blocking`] on the executor's blocking thread.
    pub async fn change<R: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Table) -> R + Send + 'static,
    ) -> Result<R, KafkaError> {
        self.file
            .change(|disk| limited(change(&mut disk.users), &disk.users))
            .await
    }
}

fn limited<R>(out: R, users: &Table) -> Result<R, KafkaError> {
    if users.len() > USERS_MAX {
        return Err(KafkaError::new(
            kafka_protocol::ResponseError::UnacceptableCredential,
            format!("a server holds at most {USERS_MAX} users"),
        ));
    }
    Ok(out)
}

/// Whether `name` may be a user: 1 to [`NAME_BYTES_MAX`] bytes, no control
/// characters.
pub fn name_ok(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!("a user name is 1 to {NAME_BYTES_MAX} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("a user name has no control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::scram::ITERATIONS_MIN;

    #[test]
    fn a_change_is_on_disk_before_it_is_read_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("tw-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = Users::open(&dir).unwrap();
        assert!(users.table().is_empty());
        let c = Credential::new(Scram::Sha512, b"pw", ITERATIONS_MIN);
        users
            .change_blocking(|t| {
                t.entry("alice".into())
                    .or_default()
                    .insert(Scram::Sha512, c.clone())
            })
            .unwrap();
        assert_eq!(users.credential("alice", Scram::Sha512), Some(c.clone()));
        let again = Users::open(&dir).unwrap();
        assert_eq!(again.credential("alice", Scram::Sha512), Some(c.clone()));
        assert_eq!(again.credential("alice", Scram::Sha256), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A made-up salt looks like a real one and stays across a restart.
        assert_eq!(users.fake_salt("bob"), again.fake_salt("bob"));
        assert_eq!(users.fake_salt("bob").len(), c.salt.len());
        assert_ne!(users.fake_salt("bob"), users.fake_salt("carol"));
        std::fs::write(dir.join(FILE), "not json").unwrap();
        assert!(Users::open(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
