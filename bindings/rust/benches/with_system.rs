//! The workload of `workload.rs` with Rust's default `System` allocator (glibc malloc, or
//! whichever malloc is preloaded: jemalloc, mimalloc, tcmalloc).
#[path = "workload.rs"]
mod workload;

fn main() {
    workload::main();
}
