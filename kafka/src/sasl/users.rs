//! The SASL users: `users.json` in the data directory, one SCRAM credential per
//! user and mechanism, read at start and shared by every core.
//!
//! A change (AlterUserScramCredentials, or `tidewater users` while the server is
//! stopped) is applied to a copy, written durably (temporary file, `fsync`, rename,
//! directory `fsync`, mode 0600), and only then made the one the cores read: a
//! change is answered once it survives a crash, and a failed write changes nothing.
//! Changes are written one at a time.
//!
//! Never: holds a password (see [`Credential`]); blocks a core (a change runs on the
//! executor's blocking thread; lookups take a read lock held for a clone); or holds
//! more than [`USERS_MAX`] users.

use super::scram::{Credential, Scram};
use crate::error::KafkaError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tidewater_io::fs;

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

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct OnDisk {
    users: Table,
    /// The key made-up salts come from (see [`Users::fake_salt`]): kept, so that a
    /// name that is not a user shows the same salt across restarts, as a user's does.
    #[serde(default, with = "super::scram::base64_bytes")]
    fake_salt_key: Vec<u8>,
}

/// The users of one server.
pub struct Users {
    path: PathBuf,
    table: RwLock<Arc<Table>>,
    /// Held while a change is written: one at a time.
    writing: Mutex<()>,
    /// Made-up salts for names that are not users come from this key.
    fake_salt_key: Vec<u8>,
}

impl Users {
    /// The users in `data_dir` (none when it holds no users file). Blocking: for
    /// start-up and the `users` command, never a serving core.
    pub fn open(data_dir: &Path) -> Result<Users, KafkaError> {
        let path = data_dir.join(FILE);
        let mut disk = match fs::blocking::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<OnDisk>(&text).map_err(|e| {
                KafkaError::storage(format!("{}: not a users file: {e}", path.display()))
            })?,
            Err(e) if e.is_not_found() => OnDisk::default(),
            Err(e) => {
                return Err(KafkaError::storage(format!(
                    "cannot read {}: {}",
                    path.display(),
                    e.source
                )))
            }
        };
        if disk.fake_salt_key.is_empty() {
            // Written with the first change.
            disk.fake_salt_key = super::scram::random_bytes(32);
        }
        Ok(Users {
            path,
            table: RwLock::new(Arc::new(disk.users)),
            writing: Mutex::new(()),
            fake_salt_key: disk.fake_salt_key,
        })
    }

    /// Every user now.
    pub fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `user`'s credential for `mechanism`.
    pub fn credential(&self, user: &str, mechanism: Scram) -> Option<Credential> {
        self.table().get(user)?.get(&mechanism).cloned()
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
        let table = self.table();
        if let Some((m, c)) = table.get(user).and_then(|creds| creds.iter().next_back()) {
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

    /// Applies `change` to a copy of the table, writes it durably and makes it the
    /// table; `change`'s error (or a failed write) leaves everything as it was.
    /// Blocking: call it through [`Users::change`] on a core.
    pub fn change_blocking<R>(
        &self,
        change: impl FnOnce(&mut Table) -> R,
    ) -> Result<R, KafkaError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut table = (*self.table()).clone();
        let before = table.clone();
        let out = change(&mut table);
        if table == before {
            return Ok(out);
        }
        if table.len() > USERS_MAX {
            return Err(KafkaError::new(
                kafka_protocol::ResponseError::UnacceptableCredential,
                format!("a server holds at most {USERS_MAX} users"),
            ));
        }
        let disk = OnDisk {
            users: table,
            fake_salt_key: self.fake_salt_key.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&disk)
            .map_err(|e| KafkaError::storage(format!("cannot encode the users: {e}")))?;
        fs::blocking::write_durable_private(&self.path, &bytes).map_err(|e| {
            KafkaError::storage(format!(
                "cannot write {}: {}",
                self.path.display(),
                e.source
            ))
        })?;
        let fresh = Arc::new(disk.users);
        match self.table.write() {
            Ok(mut t) => *t = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(out)
    }

    /// [`Users::change_blocking`] on the executor's blocking thread.
    pub async fn change<R: Send + 'static>(
        self: &Arc<Self>,
        change: impl FnOnce(&mut Table) -> R + Send + 'static,
    ) -> Result<R, KafkaError> {
        let users = self.clone();
        glommio::executor()
            .spawn_blocking(move || users.change_blocking(change))
            .await
    }
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
