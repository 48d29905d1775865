//! The `syncline` binary: `syncline serve` runs the server; every other subcommand is a
//! client of a running server (see `cli`).

fn main() {
    std::process::exit(syncline_server::cli::main());
}
