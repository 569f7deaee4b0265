//! Builds the C library (the repository two levels up) with CMake and links it statically.
//!
//! - `MAPALLOC_BUILD_DIR=DIR`: use `DIR/libmapalloc.a` from an existing CMake build of the
//!   repository instead (tools/test.sh points it at the build it has just made).
//! - `MAPALLOC_CMAKE_ARGS="-DMAPALLOC_SECURE=ON ..."`: extra arguments for the configure step.
//!
//! The library depends on libc and pthreads only.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("mapalloc build.rs: cannot run {:?}: {}", cmd, e));
    if !status.success() {
        panic!("mapalloc build.rs: {:?} failed with {}", cmd, status);
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo = manifest
        .join("../..")
        .canonicalize()
        .expect("repository root");
    println!("cargo:rerun-if-env-changed=MAPALLOC_BUILD_DIR");
    println!("cargo:rerun-if-env-changed=MAPALLOC_CMAKE_ARGS");

    let libdir = match env::var_os("MAPALLOC_BUILD_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let lib = dir.join("libmapalloc.a");
            if !lib.is_file() {
                panic!(
                    "mapalloc build.rs: MAPALLOC_BUILD_DIR={} has no libmapalloc.a \
                     (build the target mapalloc_static there first)",
                    dir.display()
                );
            }
            println!("cargo:rerun-if-changed={}", lib.display());
            dir
        }
        None => build_with_cmake(&repo),
    };
    println!("cargo:rustc-link-search=native={}", libdir.display());
    println!("cargo:rustc-link-lib=static=mapalloc");
    println!("cargo:rustc-link-lib=dylib=pthread");
    println!("cargo:include={}", repo.join("include").display());
}

fn build_with_cmake(repo: &Path) -> PathBuf {
    for p in ["src", "include", "CMakeLists.txt"] {
        println!("cargo:rerun-if-changed={}", repo.join(p).display());
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("cmake-build");
    let mut configure = Command::new("cmake");
    configure.arg("-S").arg(repo).arg("-B").arg(&out).args([
        "-DCMAKE_BUILD_TYPE=Release",
        "-DMAPALLOC_BUILD_TESTS=OFF",
        "-DMAPALLOC_BUILD_BENCH=OFF",
    ]);
    if let Ok(extra) = env::var("MAPALLOC_CMAKE_ARGS") {
        configure.args(extra.split_whitespace());
    }
    run(&mut configure);
    let jobs = env::var("NUM_JOBS").unwrap_or_else(|_| "1".into());
    run(Command::new("cmake").arg("--build").arg(&out).args([
        "--target",
        "mapalloc_static",
        "-j",
        &jobs,
    ]));
    out
}
