//! Checks every registered node's `/object_info` entry against ComfyUI's
//! (`shared/spec/object_info_core.json`).

use std::path::PathBuf;

use comfy_graph::Folders;
use serde_json::Value as Json;

/// The spec folder: `COMFY_SPEC_DIR`, else `<workspace>/../shared/spec`.
fn spec_dir() -> PathBuf {
    std::env::var_os("COMFY_SPEC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec"))
}

/// Replaces the `"<files present in the folder>"` placeholder list with `files`.
fn substitute(v: &mut Json, files: &[Json]) {
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

/// The image/mask/latent nodes of this crate (the SD nodes have their own test in `sd/`).
const NODES: &[&str] = &[
    "EmptyLatentImage",
    "LatentUpscale",
    "LatentUpscaleBy",
    "LatentComposite",
    "LatentBlend",
    "LatentFromBatch",
    "RepeatLatentBatch",
    "SetLatentNoiseMask",
    "SaveLatent",
    "LoadLatent",
    "LoadImage",
    "LoadImageMask",
    "SaveImage",
    "PreviewImage",
    "ImageScale",
    "ImageScaleBy",
    "ImageInvert",
    "ImageBatch",
    "ImageCrop",
    "ImagePadForOutpaint",
    "ImageCompositeMasked",
    "ImageBlend",
    "ImageBlur",
    "ImageSharpen",
    "EmptyImage",
    "SolidMask",
    "InvertMask",
    "MaskToImage",
    "ImageToMask",
    "GrowMask",
    "FeatherMask",
    "CropMask",
    "MaskComposite",
];

#[test]
fn every_node_matches_object_info_core() {
    let path = spec_dir().join("object_info_core.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("spec file {} missing: {e}", path.display()));
    let expected: serde_json::Map<String, Json> = serde_json::from_str(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folders = Folders::new(dir.path());
    folders.create_all().unwrap();
    std::fs::write(folders.input.join("example.png"), b"x").unwrap();
    let files = vec![Json::String("example.png".into())];
    let reg = crate::registry();
    let mut failures = Vec::new();
    for &name in NODES {
        if reg.schema(name).is_none() {
            failures.push(format!("{name}: not registered"));
            continue;
        }
        let Some(want) = expected.get(name) else {
            failures.push(format!("{name}: not in object_info_core.json"));
            continue;
        };
        let mut want = want.clone();
        substitute(&mut want, &files);
        let got = reg.schema(name).unwrap().to_object_info(&folders);
        if got != want {
            failures.push(format!("{name}:\n  got  {got}\n  want {want}"));
        }
        // Key order as ComfyUI renders it.
        let keys = |v: &Json| v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if keys(&got) != keys(&want) {
            failures.push(format!("{name}: key order {:?} != {:?}", keys(&got), keys(&want)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
