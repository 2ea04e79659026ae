//! Shared helpers of the tests that run `examples/*.json` end to end: the tiny recipe
//! checkpoints, the "shrink" of each example (checkpoint names, sizes, steps), the expected
//! outputs of every example, the input image, and a small PNG reader.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use comfy_diffusion::recipe::{write_recipe_checkpoint, Arch};
use serde_json::{json, Value as Json};

/// The tiny SD1.5 recipe checkpoint the SD1.5 examples are switched to.
pub const TINY_SD15: &str = "tiny_sd15.safetensors";
/// The tiny SDXL recipe checkpoint the SDXL examples are switched to.
pub const TINY_SDXL: &str = "tiny_sdxl.safetensors";
/// Pixel sizes and offsets are divided by this (1024 → 64, 512 → 32, 384 → 24).
pub const SHRINK: i64 = 16;
/// Sampler steps of every shrunk example.
pub const STEPS: i64 = 2;
/// The input image the img2img / inpaint examples load (`input/example.png`).
pub const INPUT_IMAGE: &str = "example.png";
/// Its size; its left `INPUT_HOLE` columns are transparent (the inpaint mask).
pub const INPUT_W: u32 = 48;
pub const INPUT_H: u32 = 40;
pub const INPUT_HOLE: u32 = 16;

/// What one example saves once shrunk: `(width, height, images)` of its single SaveImage and
/// the checkpoint it expects (as the examples' README states).
pub fn expected_outputs() -> BTreeMap<&'static str, (u32, u32, usize, &'static str)> {
    BTreeMap::from([
        ("basic_text_to_image.json", (64, 64, 1, "sd_xl_base_1.0.safetensors")),
        ("batch.json", (64, 64, 4, "sd_xl_base_1.0.safetensors")),
        // LatentUpscale to 768 shrinks to 48, which ComfyUI raises to its minimum of 64.
        ("hires_fix.json", (64, 64, 1, "v1-5-pruned-emaonly.safetensors")),
        ("img2img.json", (INPUT_W, INPUT_H, 1, "sd_xl_base_1.0.safetensors")),
        ("inpaint.json", (INPUT_W, INPUT_H, 1, "sd_xl_base_1.0.safetensors")),
        ("pirate_rabbit_comic_composite_v2.json", (70, 54, 1, "sd_xl_base_1.0.safetensors")),
        ("sd15_text_to_image.json", (32, 32, 1, "v1-5-pruned-emaonly.safetensors")),
    ])
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `examples/*.json` as `(file name, API prompt)`, sorted by name; asserts that the set
/// of files is exactly the one [`expected_outputs`] describes (a new example needs an entry).
pub fn examples() -> Vec<(String, Json)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root().join("examples")).expect("examples/").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.ends_with(".json") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("read example");
        let prompt: Json = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
        out.push((name, prompt));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = expected_outputs().keys().copied().collect();
    assert_eq!(names, want, "examples/*.json and the expected outputs table differ");
    out
}

/// Writes both tiny checkpoints into `<base>/models/checkpoints` and the input image into
/// `<base>/input` (when `with_input`).
pub fn prepare_base(base: &Path, with_input: bool) {
    let ck = base.join("models/checkpoints");
    std::fs::create_dir_all(&ck).unwrap();
    write_recipe_checkpoint(Arch::Sd15, true, 0, &ck.join(TINY_SD15)).expect("tiny SD1.5 checkpoint");
    write_recipe_checkpoint(Arch::Sdxl, true, 0, &ck.join(TINY_SDXL)).expect("tiny SDXL checkpoint");
    if with_input {
        std::fs::create_dir_all(base.join("input")).unwrap();
        std::fs::write(base.join("input").join(INPUT_IMAGE), input_png()).unwrap();
    }
}

fn shrink(v: &Json) -> Option<Json> {
    let n = v.as_i64()?;
    Some(json!((n + SHRINK / 2) / SHRINK))
}

/// The example switched to the tiny checkpoints: `ckpt_name` → tiny SDXL/SD1.5 (by the real
/// name), sampler steps → [`STEPS`], every pixel size/offset (`width`, `height`, `x`, `y`,
/// `left`, `top`, `right`, `bottom`, `feathering`) divided by [`SHRINK`]. Asserts the example
/// names the checkpoint `expected` and that shrunk latent sizes stay multiples of 8.
pub fn tiny(name: &str, prompt: &Json, expected_ckpt: &str) -> Json {
    let mut p = prompt.clone();
    for (id, node) in p.as_object_mut().expect("prompt object") {
        let class = node["class_type"].as_str().unwrap_or_default().to_string();
        let inputs = node["inputs"].as_object_mut().expect("inputs");
        if let Some(ck) = inputs.get("ckpt_name").and_then(Json::as_str) {
            assert_eq!(ck, expected_ckpt, "{name} node {id}: checkpoint stated in examples/README.md");
            let tiny = if ck.contains("xl") { TINY_SDXL } else { TINY_SD15 };
            inputs.insert("ckpt_name".into(), json!(tiny));
        }
        if class.starts_with("KSampler") {
            inputs.insert("steps".into(), json!(STEPS));
        }
        for key in ["width", "height", "x", "y", "left", "top", "right", "bottom", "feathering"] {
            if let Some(v) = inputs.get(key).and_then(shrink) {
                inputs.insert(key.into(), v);
            }
        }
        if class == "EmptyLatentImage" || class == "LatentUpscale" {
            for key in ["width", "height"] {
                let v = inputs[key].as_i64().unwrap();
                assert!(v % 8 == 0 && v >= 16, "{name} node {id}: shrunk {key} {v}");
            }
        }
        if class == "LoadImage" {
            assert_eq!(inputs["image"], json!(INPUT_IMAGE), "{name} node {id}");
        }
    }
    p
}

/// Every example, shrunk: `(file name, tiny prompt, (w, h, images))`.
pub fn tiny_examples() -> Vec<(String, Json, (u32, u32, usize))> {
    let want = expected_outputs();
    examples()
        .into_iter()
        .map(|(name, p)| {
            let (w, h, n, ck) = want[name.as_str()];
            let t = tiny(&name, &p, ck);
            (name, t, (w, h, n))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// PNG

/// The examples' input image: a colour gradient whose left [`INPUT_HOLE`] columns are
/// transparent (LoadImage's mask is 1 there, so inpainting regenerates them).
pub fn input_png() -> Vec<u8> {
    crate::server_support::png::rgba_png(INPUT_W, INPUT_H, &[], |x, y| {
        let a = if x < INPUT_HOLE { 0 } else { 255 };
        [(x * 5) as u8, (y * 6) as u8, 180, a]
    })
}

/// What a PNG says about itself: size, colour type and its tEXt chunks.
#[derive(Debug)]
pub struct PngInfo {
    pub width: u32,
    pub height: u32,
    pub color_type: u8,
    pub text: BTreeMap<String, String>,
    /// The concatenated IDAT data (equal pixels encode to equal bytes with one encoder).
    pub idat: Vec<u8>,
}

/// Parses a PNG's chunks (checking signature and CRCs).
pub fn png_info(bytes: &[u8]) -> PngInfo {
    assert!(bytes.len() > 33 && &bytes[..8] == b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut info = PngInfo { width: 0, height: 0, color_type: 0, text: BTreeMap::new(), idat: Vec::new() };
    let mut pos = 8;
    let mut seen_end = false;
    while pos + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        assert!(pos + 12 + len <= bytes.len(), "truncated PNG chunk");
        let data = &bytes[pos + 8..pos + 8 + len];
        let crc = u32::from_be_bytes(bytes[pos + 8 + len..pos + 12 + len].try_into().unwrap());
        assert_eq!(crc, crate::server_support::png::crc32(&bytes[pos + 4..pos + 8 + len]), "CRC of {}", String::from_utf8_lossy(kind));
        match kind {
            b"IHDR" => {
                info.width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                info.height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                info.color_type = data[9];
            }
            b"tEXt" => {
                let nul = data.iter().position(|b| *b == 0).expect("tEXt keyword");
                let key = String::from_utf8_lossy(&data[..nul]).to_string();
                // tEXt is Latin-1.
                let val: String = data[nul + 1..].iter().map(|&b| b as char).collect();
                info.text.insert(key, val);
            }
            b"IDAT" => info.idat.extend_from_slice(data),
            b"IEND" => seen_end = true,
            _ => {}
        }
        pos += 12 + len;
    }
    assert!(seen_end, "PNG without IEND");
    info
}

/// PNG files under `dir`, recursively, sorted.
pub fn pngs_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "png") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
