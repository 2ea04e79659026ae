//! Checks the SD nodes' `/object_info` entries against ComfyUI's
//! (`shared/spec/object_info_core.json`), with a checkpoint file present so the file combos
//! are exercised.

use std::path::PathBuf;

use comfy_graph::{Folders, NodeRegistry};
use serde_json::Value as Json;

pub(crate) fn spec_dir() -> PathBuf {
    std::env::var_os("COMFY_SPEC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec"))
}

/// Replaces the `"<files present in the folder>"` placeholder list with `files`.
pub(crate) fn substitute(v: &mut Json, files: &[Json]) {
    match v {
        Json::Array(a) => {
            if a.len() == 1 && a[0] == Json::String("<files present in the folder>".into()) {
                *a = files.to_vec();
            } else {
                a.iter_mut().for_each(|x| substitute(x, files));
            }
        }
        Json::Object(m) => m.values_mut().for_each(|x| substitute(x, files)),
        _ => {}
    }
}

/// Every class of `reg` against its `object_info_core.json` entry (value and key order), with
/// the folder placeholders replaced by `files`; one line per difference.
pub(crate) fn differences_from_spec(
    reg: &NodeRegistry,
    folders: &Folders,
    expected: &serde_json::Map<String, Json>,
    files: &[Json],
) -> Vec<String> {
    let mut failures = Vec::new();
    for name in reg.class_names() {
        let Some(want) = expected.get(name) else {
            failures.push(format!("{name}: not in object_info_core.json"));
            continue;
        };
        let mut want = want.clone();
        substitute(&mut want, files);
        let got = reg.schema(name).unwrap().to_object_info(folders);
        if got != want {
            failures.push(format!("{name}:\n  got  {got}\n  want {want}"));
        }
        let keys = |v: &Json| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if keys(&got) != keys(&want) {
            failures.push(format!("{name}: key order {:?} != {:?}", keys(&got), keys(&want)));
        }
    }
    failures
}

/// `object_info_core.json` (fails loudly when the spec folder is missing).
pub(crate) fn spec_object_info() -> serde_json::Map<String, Json> {
    let path = spec_dir().join("object_info_core.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("spec file {} missing: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sd_nodes_match_object_info_core() {
    let expected = spec_object_info();
    let dir = tempfile::tempdir().unwrap();
    let folders = Folders::new(dir.path());
    folders.create_all().unwrap();
    std::fs::write(dir.path().join("models/checkpoints/model_a.safetensors"), b"x").unwrap();
    let files = vec![Json::String("model_a.safetensors".into())];
    let mut reg = NodeRegistry::new();
    super::register_sd(&mut reg);
    assert_eq!(reg.len(), 32);
    let failures = differences_from_spec(&reg, &folders, &expected, &files);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
