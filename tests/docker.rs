//! Checks the Dockerfile without a Docker engine (none runs in CI): a real linter
//! (npm's `dockerfile-utils`, installed by `.ci/run` under `tests/tools/`), every path it
//! copies exists, and the binary and features it builds exist in the workspace.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile at the repository root")
}

/// Instructions with their continuation lines joined.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(stripped) = t.strip_suffix('\\') {
            cur.push_str(stripped);
            cur.push(' ');
        } else {
            cur.push_str(t);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

#[test]
fn dockerfile_passes_the_linter() {
    let linter = root().join("tests/tools/node_modules/.bin/dockerfile-utils");
    assert!(
        linter.exists(),
        "{} is missing: run `npm install --prefix tests/tools dockerfile-utils@0.16.3` (bash .ci/run does)",
        linter.display()
    );
    let out = Command::new(&linter).arg("lint").arg(root().join("Dockerfile")).output().expect("run dockerfile-utils");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "dockerfile-utils lint reported:\n{report}");
}

#[test]
fn every_copied_path_exists() {
    let mut checked = 0;
    for ins in instructions(&dockerfile()) {
        let mut words = ins.split_whitespace();
        if words.next() != Some("COPY") {
            continue;
        }
        let args: Vec<&str> = words.collect();
        if args.iter().any(|a| a.starts_with("--from=")) {
            continue; // copies between stages
        }
        let sources = &args[..args.len() - 1];
        for src in sources {
            assert!(Path::new(&root()).join(src).exists(), "Dockerfile copies `{src}`, which is not in the repository");
            checked += 1;
        }
    }
    assert!(checked >= 4, "expected the Dockerfile to copy the workspace sources");
}

#[test]
fn built_binary_and_features_exist() {
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let text = dockerfile();
    assert!(text.contains("--bin comfy-rs"), "the Dockerfile builds the comfy-rs binary");
    assert!(cargo.contains("name = \"comfy-rs\""), "Cargo.toml defines the comfy-rs binary");
    // The GPU builder's features come from `ARG CARGO_FEATURES=...` (default `cuda`); each one
    // named there, and in the comment's example, is a feature of the root package.
    assert!(text.contains("--features \"${CARGO_FEATURES}\""), "the GPU builder builds with $CARGO_FEATURES");
    let default = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG CARGO_FEATURES="))
        .expect("the Dockerfile declares ARG CARGO_FEATURES");
    assert_eq!(default, "cuda", "the default GPU build is the plain CUDA one");
    let features = cargo.split("[features]").nth(1).expect("Cargo.toml has a [features] table");
    let features = features.split("\n[").next().unwrap_or("");
    let declared = |name: &str| features.lines().any(|l| l.trim_start().starts_with(&format!("{name} =")));
    let example = text
        .split("CARGO_FEATURES=cuda,")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|w| w.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-')))
        .expect("the Dockerfile shows how to add features");
    for name in std::iter::once("cuda").chain(std::iter::once(example)).chain(["cudnn"]) {
        assert!(declared(name), "Cargo.toml has no `{name}` feature, which the Dockerfile names");
    }
    // The runtime stages run the binary the builders produced.
    assert!(text.contains("/src/target/release/comfy-rs"));
    for needed in ["EXPOSE 8188", "HEALTHCHECK", "USER comfy", "0.0.0.0", "AS cpu", "AS gpu"] {
        assert!(text.contains(needed), "Dockerfile lacks `{needed}`");
    }
}

#[test]
fn compose_file_reserves_a_gpu() {
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    for needed in ["driver: nvidia", "capabilities: [gpu]", "8188:8188", "/data/models"] {
        assert!(compose.contains(needed), "docker-compose.yml lacks `{needed}`");
    }
}
