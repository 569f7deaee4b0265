//! The workload of `workload.rs` with `#[global_allocator] MapAlloc`.
#[path = "workload.rs"]
mod workload;

#[global_allocator]
static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc;

fn main() {
    workload::main();
}
