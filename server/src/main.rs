//! The `syncline` binary: `syncline serve` runs the server; every other subcommand is a
//! client of a running server (see `cli`).

// glibc's malloc was a quarter of the server's CPU under write load (arena locks,
// consolidation); mimalloc's per-thread free lists take most of that away.
// `--features system-allocator` leaves the system's malloc in place, for heap profilers
// (heaptrack) that see only that one.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(syncline_server::cli::main());
}
