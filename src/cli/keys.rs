//! `augur keys`: make client keys and the entries of the keys file that hold them (as digests).

use std::io::Read;
use std::process::ExitCode;

use augur_proxy::gate::keyring::digest_hex;
use rand::{Rng, SeedableRng};

use super::EXIT_BAD_INPUT;

/// `augur keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Draw a new key and print it once, with the keys-file entry that holds its digest. The key
    /// itself is stored nowhere: give it to the client and keep only the entry.
    New {
        /// The key's name in logs and metrics.
        #[arg(long)]
        id: String,
        /// The tenant it belongs to.
        #[arg(long)]
        tenant: String,
    },
    /// Print the SHA-256 of a key read from standard input (a trailing newline is ignored): what
    /// the keys file stores for it.
    Hash,
}

/// Key length, in characters of the alphabet below: 43 of 62 is over 256 bits.
const KEY_CHARS: usize = 43;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn run(command: KeysCommand) -> ExitCode {
    match command {
        KeysCommand::New { id, tenant } => {
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let secret: String = (0..KEY_CHARS)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect();
            let key = format!("augur-{secret}");
            eprintln!("the key (shown once; the keys file keeps only its digest):");
            println!("{key}");
            eprintln!("its entry in the keys file:");
            println!(
                "\n[[keys]]\nid = {}\ntenant = {}\nsha256 = \"{}\"",
                toml_string(&id),
                toml_string(&tenant),
                digest_hex(&key)
            );
            ExitCode::SUCCESS
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut key) {
                eprintln!("error: cannot read the key from standard input: {e}");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            let key = key.trim_end_matches(['\n', '\r']);
            if key.is_empty() {
                eprintln!("error: no key on standard input");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            println!("{}", digest_hex(key));
            ExitCode::SUCCESS
        }
    }
}

/// `s` as a TOML basic string (JSON's escapes are TOML's).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}
