//! Builds `src/bin/unsandbox-enter` a second time as a static
//! executable, which the agent carries (`execution::sandbox::HELPER`) and
//! installs in every recycled container: a static executable runs whatever
//! C library, if any, the container's image has. Its id (a hash of its
//! bytes) names the installed file, so that a container or template that
//! holds an older build never runs it.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/bin/unsandbox-enter/main.rs";

fn main() {
    println!("cargo::rerun-if-changed=src/bin/unsandbox-enter");
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let host = std::env::var("HOST").expect("cargo sets HOST");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let helper = out.join("unsandbox-enter");
    let mut build = Command::new(rustc);
    build.args([
        "--edition=2024",
        "--crate-name=unsandbox_enter",
        "--crate-type=bin",
        "-Copt-level=s",
        "-Cpanic=abort",
        "-Clto=fat",
        "-Ccodegen-units=1",
        "-Crelocation-model=static",
        "-Ctarget-feature=+crt-static",
        "-Cstrip=symbols",
        "-o",
    ]);
    build.arg(&helper).arg(SOURCE);
    if target != host {
        build.arg(format!("--target={target}"));
        let linker = format!(
            "CARGO_TARGET_{}_LINKER",
            target.to_uppercase().replace('-', "_")
        );
        if let Some(l) = std::env::var_os(&linker) {
            build.arg(format!("-Clinker={}", l.to_string_lossy()));
        }
    }
    let status = build.status().expect("rustc runs");
    assert!(
        status.success(),
        "building the static unsandbox-enter failed (it needs the C library's static archive: Debian's libc6-dev)"
    );
    let bytes = std::fs::read(&helper).expect("the helper was written");
    // 64-bit FNV-1a, as `agent::keys::stable_hash`.
    let id = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    println!("cargo::rustc-env=UNSANDBOX_ENTER_ID={id:016x}");
}
