//! The `augur` command: one binary for every part of augur.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
