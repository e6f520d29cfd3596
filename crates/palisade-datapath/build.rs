//! Compiles every `bpf/*.c` of the repository into a BPF object in OUT_DIR
//! (clang -O2 -g -target bpf), which the crate embeds with `include_bytes!`.
//! Rebuilt whenever anything under `bpf/` changes.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest.join("../../bpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&bpf_dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", bpf_dir.display()))
        .map(|entry| entry.expect("readable bpf/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    sources.sort();
    for source in &sources {
        compile(&clang, &bpf_dir, source, &out_dir);
    }
}

fn compile(clang: &str, bpf_dir: &Path, source: &Path, out_dir: &Path) {
    let stem = source.file_stem().expect("a .c file has a stem");
    let object = out_dir.join(stem).with_extension("o");
    let status = Command::new(clang)
        .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3"])
        .args(["-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"])
        .arg("-I")
        .arg(bpf_dir.join("include"))
        // asm/types.h for <linux/types.h> (Debian multiarch layout).
        .arg("-I")
        .arg(multiarch_include())
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {clang} to compile {}: {e} (install clang, or set CLANG)",
                source.display()
            )
        });
    assert!(
        status.success(),
        "{clang} failed to compile {} ({status}); the compiler's message is above",
        source.display()
    );
}

/// `/usr/include/<arch>-linux-gnu`, where Debian keeps `asm/` for the target.
fn multiarch_include() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    format!("/usr/include/{arch}-linux-gnu")
}
