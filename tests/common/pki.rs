//! Certificates for the TLS and SASL_SSL tests: a CA, the server's certificate for
//! 127.0.0.1 and clients' certificates, made by `openssl` as docs/security.md
//! shows.

use std::process::Command;

/// `openssl req`'s flags for a new P-256 key without a passphrase, up to its path.
const NEW_KEY: &[&str] = &[
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
];

/// A CA, the server's certificate for 127.0.0.1 and clients' certificates, in a
/// temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca", "/CN=Tidewater Test CA");
        pki.ca("other-ca", "/CN=Somebody Else");
        let server = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
        let client = "extendedKeyUsage=clientAuth\n";
        pki.leaf("server", "ca", "/CN=tidewater", server, 2);
        pki.leaf("server2", "ca", "/CN=tidewater", server, 2);
        pki.leaf("writer", "ca", "/O=Example/OU=iot/CN=writer", client, 2);
        pki.leaf("stranger", "other-ca", "/CN=stranger", client, 2);
        // Valid for no time at all: expired a second after it is made.
        pki.leaf("expired", "ca", "/CN=expired", client, 0);
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("openssl is installed (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str, subject: &str) {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let args = [&["req", "-x509"][..], NEW_KEY, &[&key, "-out", &pem]];
        let args = [&args.concat()[..], &["-subj", subject, "-days", "2"]].concat();
        self.openssl(&args);
    }

    fn leaf(&self, name: &str, ca: &str, subject: &str, extensions: &str, days: u32) {
        let ext = format!("{name}.ext");
        std::fs::write(self.dir.path().join(&ext), extensions).unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let args = [
            &["req"][..],
            NEW_KEY,
            &[&key, "-out", &csr, "-subj", subject],
        ]
        .concat();
        self.openssl(&args);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            &days.to_string(),
            "-extfile",
            &ext,
        ]);
    }

    /// kcat's flags for TLS with `client`'s certificate (None: no certificate).
    pub fn kcat_tls(&self, client: Option<&str>) -> Vec<String> {
        let mut flags = vec![
            "-X".to_string(),
            "security.protocol=SSL".to_string(),
            "-X".to_string(),
            format!("ssl.ca.location={}", self.path("ca.pem")),
        ];
        if let Some(c) = client {
            flags.extend([
                "-X".to_string(),
                format!(
                    "ssl.certificate.location={}",
                    self.path(&format!("{c}.pem"))
                ),
                "-X".to_string(),
                format!("ssl.key.location={}", self.path(&format!("{c}.key"))),
            ]);
        }
        flags
    }
}
