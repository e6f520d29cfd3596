//! Embeds the web UI (`ui/dist`, built by Vite) in the server binary, so
//! that `palisade server` serves it without internet or files beside it.
//!
//! When `ui/dist` is missing or older than the UI's sources, this runs
//! `npm ci` (when `node_modules` is missing or older than the lock file)
//! and `npm run build` in `ui/`, under a lock directory so that parallel
//! cargo builds of several engineers do not run npm over each other. It
//! then writes `$OUT_DIR/ui_assets.rs`: a table of `include_bytes!` of every
//! file of `ui/dist`. `PALISADE_UI_SKIP=1` embeds a page saying the UI was
//! not built instead (for machines without Node.js).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Files and directories whose changes make `ui/dist` stale.
const SOURCES: [&str; 6] = [
    "index.html",
    "src",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

/// A lock directory older than this was left by a build that died.
const STALE_LOCK: Duration = Duration::from_secs(600);

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let ui = manifest.join("../../ui");
    println!("cargo:rerun-if-env-changed=PALISADE_UI_SKIP");
    let skip = std::env::var("PALISADE_UI_SKIP").is_ok_and(|v| v == "1");
    if skip || !ui.join("package.json").exists() {
        println!(
            "cargo:warning=the web UI is not embedded ({}); /ui/ will say so",
            if skip {
                "PALISADE_UI_SKIP=1"
            } else {
                "no ui/ directory beside the crate"
            }
        );
        write_placeholder(&out);
        return;
    }
    for source in SOURCES {
        println!("cargo:rerun-if-changed={}", ui.join(source).display());
    }
    // Also when someone rebuilt dist by hand (hashed file names change).
    println!(
        "cargo:rerun-if-changed={}",
        ui.join("dist/index.html").display()
    );
    if is_stale(&ui) {
        let _lock = BuildLock::acquire(&ui.join(".build-lock"));
        // Another build may have finished while this one waited.
        if is_stale(&ui) {
            build_ui(&ui);
        }
    }
    write_table(&ui.join("dist"), &out);
}

/// The newest modification time under `path` (a file or a directory).
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|entry| newest(&entry.path()))
        .max()
}

fn is_stale(ui: &Path) -> bool {
    let Some(built) = fs::metadata(ui.join("dist/index.html"))
        .and_then(|m| m.modified())
        .ok()
    else {
        return true;
    };
    SOURCES
        .iter()
        .filter_map(|s| newest(&ui.join(s)))
        .any(|changed| changed > built)
}

/// A directory created atomically and removed on drop.
struct BuildLock(PathBuf);

impl BuildLock {
    fn acquire(path: &Path) -> BuildLock {
        loop {
            match fs::create_dir(path) {
                Ok(()) => return BuildLock(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > STALE_LOCK) {
                        let _ = fs::remove_dir(path);
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("cannot create the UI build lock {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

fn build_ui(ui: &Path) {
    let lock = ui.join("package-lock.json");
    let installed = ui.join("node_modules/.package-lock.json");
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&installed).is_none() || modified(&installed) < modified(&lock) {
        println!("cargo:warning=installing the web UI's packages (npm ci in ui/)");
        npm(ui, &["ci", "--no-audit", "--no-fund"]);
    }
    println!("cargo:warning=building the web UI (npm run build in ui/)");
    npm(ui, &["run", "build"]);
}

fn npm(ui: &Path, args: &[&str]) {
    let output = match Command::new("npm").args(args).current_dir(ui).output() {
        Ok(output) => output,
        Err(e) => panic!(
            "\n\nThe web UI must be built, and `npm {}` could not start: {e}.\n\
             Install Node.js (>= 20.19) and npm, then build again; or build a server without \
             the UI with PALISADE_UI_SKIP=1.\n\n",
            args.join(" ")
        ),
    };
    if !output.status.success() {
        panic!(
            "\n\n`npm {}` in {} failed ({}):\n{}\n{}\n\
             Fix the error above (run it by hand in ui/ to see it live), or build a server \
             without the UI with PALISADE_UI_SKIP=1.\n\n",
            args.join(" "),
            ui.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            files(&path, &format!("{prefix}{name}/"), out);
        } else {
            out.push((format!("{prefix}{name}"), path));
        }
    }
}

fn write_table(dist: &Path, out: &Path) {
    let mut list = Vec::new();
    files(dist, "", &mut list);
    assert!(
        list.iter().any(|(name, _)| name == "index.html"),
        "{} has no index.html: run `npm run build` in ui/",
        dist.display()
    );
    let mut code = String::from(
        "/// The files of `ui/dist`: path under `/ui/`, contents, content type.\n\
         pub static ASSETS: &[(&str, &[u8], &str)] = &[\n",
    );
    for (name, path) in list {
        let path = path.canonicalize().expect("a listed file exists");
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({path:?}), {:?}),\n",
            content_type(&name)
        ));
    }
    code.push_str("];\n");
    fs::write(out.join("ui_assets.rs"), code).expect("OUT_DIR is writable");
}

fn write_placeholder(out: &Path) {
    let page = "<!doctype html><title>palisade</title><h1>palisade</h1>\
                <p>This server was built without its web UI (PALISADE_UI_SKIP=1, or no ui/ \
                directory). Build it with Node.js and npm installed to get the map.</p>\n";
    fs::write(out.join("placeholder.html"), page).expect("OUT_DIR is writable");
    fs::write(
        out.join("ui_assets.rs"),
        "/// The files of `ui/dist`: path under `/ui/`, contents, content type.\n\
         pub static ASSETS: &[(&str, &[u8], &str)] = &[\n\
         (\"index.html\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/placeholder.html\")), \"text/html; charset=utf-8\"),\n];\n",
    )
    .expect("OUT_DIR is writable");
}
