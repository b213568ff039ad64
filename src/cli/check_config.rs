//! `augur check-config`: validate a config without starting anything.

use std::path::Path;
use std::process::ExitCode;

use augur_proxy::Config;

pub fn run(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            let backends: usize = config.pools.values().map(|p| p.backends.len()).sum();
            println!(
                "{}: ok ({} listener(s), {} route(s), {} pool(s), {} backend(s))",
                path.display(),
                config.listeners.len(),
                config.routes.len(),
                config.pools.len(),
                backends
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(super::EXIT_BAD_INPUT)
        }
    }
}
