//! `tidewater users`: the SASL users of a data directory, changed while its server
//! is stopped (while it runs, its Kafka API changes them:
//! AlterUserScramCredentials, as `kafka-configs --entity-type users` sends it).
//!
//! Never: takes a password from the command line (it would show in `ps` and the
//! shell's history; `--password-stdin` reads it), or writes under a running server
//! (the data directory's lock is taken first).

use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::PathBuf;
use tidewater_kafka::sasl::scram::{Credential, Scram, ITERATIONS_MAX, ITERATIONS_MIN};
use tidewater_kafka::sasl::users::{name_ok, Users};

#[derive(clap::Subcommand)]
pub enum UsersCommand {
    /// Add a user, or set the password of one: its credentials become those of the
    /// mechanisms given (the others are removed, so no old password stays).
    Add {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeat for both (default: both).
        #[arg(long)]
        mechanism: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = ITERATIONS_MIN)]
        iterations: u32,
        #[command(flatten)]
        at: DataDir,
    },
    /// Remove a user (or only its credential for the mechanisms given).
    Remove {
        name: String,
        #[arg(long)]
        mechanism: Vec<String>,
        #[command(flatten)]
        at: DataDir,
    },
    /// List the users and their mechanisms (never a password or a key).
    List {
        #[command(flatten)]
        at: DataDir,
    },
}

/// Where the users are: the data directory, given or from the config file, as
/// `tidewater serve` finds it.
#[derive(clap::Args)]
pub struct DataDir {
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's config file (its data_dir).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        let file = match &self.config {
            Some(path) => crate::config::FileConfig::load(path)?,
            None => crate::config::FileConfig::embedded_defaults(),
        };
        Ok(file
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./tidewater-data")))
    }
}

pub fn run(cmd: UsersCommand) -> Result<i32> {
    match cmd {
        UsersCommand::Add {
            name,
            mechanism,
            iterations,
            at,
            ..
        } => {
            name_ok(&name).map_err(anyhow::Error::msg)?;
            let mechanisms = mechanisms(&mechanism)?;
            if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
                bail!("--iterations {iterations}: use {ITERATIONS_MIN} to {ITERATIONS_MAX}");
            }
            let password = read_password()?;
            let (users, _lock) = open(&at)?;
            let credentials: Vec<(Scram, Credential)> = mechanisms
                .iter()
                .map(|&m| (m, Credential::new(m, password.as_bytes(), iterations)))
                .collect();
            let added = users.change_blocking(|t| {
                t.insert(name.clone(), credentials.into_iter().collect())
                    .is_none()
            })?;
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            let what = if added { "added" } else { "updated" };
            println!("user {name} {what} ({})", names.join(", "));
            Ok(0)
        }
        UsersCommand::Remove {
            name,
            mechanism,
            at,
        } => {
            let only = mechanisms(&mechanism)?;
            let (users, _lock) = open(&at)?;
            let removed = users.change_blocking(|t| {
                let Some(creds) = t.get_mut(&name) else {
                    return false;
                };
                let before = creds.len();
                creds.retain(|m, _| !only.contains(m));
                let removed = creds.len() < before;
                if creds.is_empty() {
                    t.remove(&name);
                }
                removed
            })?;
            if !removed {
                bail!("no user {name:?} with those mechanisms");
            }
            println!("user {name}: removed");
            Ok(0)
        }
        UsersCommand::List { at } => {
            let (users, _lock) = open(&at)?;
            for (name, creds) in users.table().iter() {
                let list: Vec<String> = creds
                    .iter()
                    .map(|(m, c)| format!("{} (iterations {})", m.name(), c.iterations))
                    .collect();
                println!("{name}\t{}", list.join(", "));
            }
            Ok(0)
        }
    }
}

/// The mechanisms named, every SCRAM mechanism when none is.
fn mechanisms(names: &[String]) -> Result<Vec<Scram>> {
    if names.is_empty() {
        return Ok(Scram::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Scram::of_name(n).with_context(|| {
                format!("--mechanism {n:?}: use SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN checks passwords against these)")
            })
        })
        .collect()
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("the password on standard input is empty");
    }
    Ok(password.to_string())
}

/// The users of the data directory, with its lock held: no server runs on it.
fn open(at: &DataDir) -> Result<(Users, Vec<std::fs::File>)> {
    let dir = at.resolve()?;
    let lock = crate::server::lock_dirs(&[&dir]).context(
        "while the server runs, change its users through the Kafka API (AlterUserScramCredentials, e.g. kafka-configs --alter --entity-type users --entity-name NAME --add-config 'SCRAM-SHA-512=[password=...]')",
    )?;
    let users = Users::open(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((users, lock))
}
