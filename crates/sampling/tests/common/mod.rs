//! Shared helpers for the golden-file tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The golden folder: `$COMFY_GOLDEN_DIR`, else `<workspace>/../shared/golden`. Panics if missing.
pub fn golden_dir() -> PathBuf {
    let dir = match std::env::var("COMFY_GOLDEN_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
    };
    assert!(
        dir.is_dir(),
        "golden folder {} is missing: set COMFY_GOLDEN_DIR",
        dir.display()
    );
    dir
}

/// One f32 tensor from a golden safetensors file.
#[derive(Clone, Debug)]
pub struct Golden {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Loads every tensor of `name` (e.g. `noise.safetensors`).
pub fn load_tensors(name: &str) -> BTreeMap<String, Golden> {
    let path = golden_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut out = BTreeMap::new();
    for (k, v) in st.tensors() {
        assert_eq!(v.dtype(), safetensors::Dtype::F32, "{k}");
        let data = v
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            k.to_string(),
            Golden {
                shape: v.shape().to_vec(),
                data,
            },
        );
    }
    assert!(!out.is_empty(), "{name} has no tensors");
    out
}

/// Loads a golden JSON file.
pub fn load_json(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    let s = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).expect("valid json")
}

/// Parses a JSON float (numbers or "nan"/"inf"/"-inf").
pub fn jf(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::Number(n) => n.as_f64().expect("f64"),
        serde_json::Value::String(s) => match s.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => other.parse().expect("numeric string"),
        },
        other => panic!("not a float: {other}"),
    }
}

/// Asserts equal u32 bit patterns, reporting the first mismatch.
pub fn assert_bits(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let bad = got
        .iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    if bad > 0 {
        let (i, (a, b)) = got
            .iter()
            .zip(want)
            .enumerate()
            .find(|(_, (a, b))| a.to_bits() != b.to_bits())
            .unwrap();
        panic!(
            "{name}: {bad}/{} differ; first at {i}: got {a:e} want {b:e}",
            got.len()
        );
    }
}

/// Max absolute difference.
pub fn max_abs(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}
