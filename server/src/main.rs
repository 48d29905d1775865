//! The `syncline` binary: `syncline serve` runs the server; every other subcommand is a
//! client of a running server (see `cli`).

// glibc's malloc was a quarter of the server's CPU under write load (arena locks,
// consolidation); mimalloc's per-thread free lists take most of that away.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(syncline_server::cli::main());
}
