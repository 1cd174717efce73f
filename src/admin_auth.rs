//! Who may use the admin listener: a bearer token from a file, or a client
//! certificate its TLS verified (`admin_tls_client_ca_file`), asked of every path
//! but those left open (`/metrics` and `/health` by default, so scrapers and load
//! balancers need nothing).
//!
//! Owns the token and the comparison (constant time). Never logs the token.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Shortest token accepted: 16 characters (`openssl rand -hex 32` gives 64).
const TOKEN_CHARS_MIN: usize = 16;

/// The admin listener's access rule.
#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    /// None: every path is open (no token configured).
    token: Option<String>,
    /// Paths served without the token.
    open: Vec<String>,
    /// A verified client certificate stands for the token.
    certificates: bool,
}

impl AdminAuth {
    /// No token: everything open, as before the setting existed.
    pub fn open() -> AdminAuth {
        AdminAuth::default()
    }

    /// The token in `file` (surrounding whitespace dropped), asked of every path
    /// but `open`.
    pub fn from_file(file: &Path, open: Vec<String>) -> Result<AdminAuth> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("admin_token_file {}: cannot read it", file.display()))?;
        let token = text.trim().to_string();
        if token.chars().count() < TOKEN_CHARS_MIN || token.chars().any(char::is_whitespace) {
            bail!(
                "admin_token_file {}: the token must be one word of at least {TOKEN_CHARS_MIN} characters (e.g. from `openssl rand -hex 32`)",
                file.display()
            );
        }
        warn_if_readable_by_others(file);
        Ok(AdminAuth {
            token: Some(token),
            open,
            certificates: false,
        })
    }

    /// A verified client certificate also lets a request through (the admin
    /// listener's TLS has a client CA); `open` paths need neither.
    pub fn with_client_certificates(self, open: Vec<String>) -> AdminAuth {
        AdminAuth {
            certificates: true,
            open,
            ..self
        }
    }

    /// Whether anything is asked of a client at all.
    pub fn protects(&self) -> bool {
        self.token.is_some() || self.certificates
    }

    /// Whether a request for `path` with this `Authorization` header value, on a
    /// connection that did (`certified`) or did not show a verified client
    /// certificate, may go on.
    pub fn allows(&self, path: &str, authorization: Option<&str>, certified: bool) -> bool {
        if !self.protects() || self.open.iter().any(|p| p == path) {
            return true;
        }
        if certified && self.certificates {
            return true;
        }
        let Some(token) = &self.token else {
            return false;
        };
        let given = authorization
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        same(given.as_bytes(), token.as_bytes())
    }
}

/// Equal, in time that does not depend on where they first differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %file.display(),
                "admin_token_file is readable by other users: chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_asked_of_every_path_but_the_open_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let auth = AdminAuth::from_file(&file, vec!["/metrics".into()]).unwrap();
        assert!(auth.allows("/metrics", None, false));
        assert!(!auth.allows("/checkpoint", None, false));
        assert!(!auth.allows("/checkpoint", Some("Bearer 0123456789abcdef012"), false));
        assert!(!auth.allows("/checkpoint", Some("Basic 0123456789abcdef0123"), false));
        assert!(auth.allows("/checkpoint", Some("Bearer 0123456789abcdef0123"), false));
        // A certificate counts only where the listener verifies them.
        assert!(!auth.allows("/checkpoint", None, true));
        let both = auth.with_client_certificates(vec!["/health".into()]);
        assert!(both.allows("/checkpoint", None, true));
        assert!(both.allows("/checkpoint", Some("Bearer 0123456789abcdef0123"), false));
        assert!(!both.allows("/metrics", None, false));
        let only = AdminAuth::open().with_client_certificates(vec!["/health".into()]);
        assert!(only.protects());
        assert!(only.allows("/checkpoint", None, true));
        assert!(!only.allows("/checkpoint", Some("Bearer x"), false));
        assert!(AdminAuth::open().allows("/checkpoint", None, false));
        std::fs::write(&file, "short").unwrap();
        let e = AdminAuth::from_file(&file, Vec::new()).unwrap_err();
        assert!(e.to_string().contains("at least 16"), "{e}");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
