use super::*;
use sha2::{Digest, Sha256};
use std::io::Read;

/// `shared/spec`, from `COMFY_SPEC_DIR` or `<workspace>/../shared/spec`; panics when missing.
pub(crate) fn spec_dir() -> PathBuf {
    let dir = std::env::var_os("COMFY_SPEC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec"));
    assert!(
        dir.is_dir(),
        "spec folder {} is missing (set COMFY_SPEC_DIR)",
        dir.display()
    );
    dir
}

fn manifest(model: &str) -> serde_json::Value {
    let p = spec_dir().join(format!("manifest_{model}.json"));
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

fn bits_of(spec: &TensorSpec, i: usize) -> u16 {
    let mut b = Vec::new();
    tensor_bytes(spec, 0, i, i + 1, &mut b);
    u16::from_le_bytes([b[0], b[1]])
}

fn f16spec(name: &str, shape: &[usize]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: SpecDtype::F16,
        shape: shape.to_vec(),
    }
}

#[test]
fn fnv_and_spec_test_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
    assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    let out = f16spec("model.diffusion_model.out.2.weight", &[4, 320, 3, 3]);
    assert_eq!(fnv1a64(out.name.as_bytes()), 0xf71fefae161e678f);
    match role_of(&out) {
        Role::Random { base, scale } => {
            assert_eq!(base, 0.0);
            assert_eq!(scale.to_bits(), 0x3F908654A2D4F6DA);
        }
        r => panic!("{r:?}"),
    }
    let key = 0xf71fefae161e678f;
    assert_eq!(uniform(key, 0), -0.7837740778923035);
    assert_eq!(uniform(key, 1), 0.6853030323982239);
    assert_eq!(uniform(key, 2), -0.527221143245697);
    assert_eq!(
        [bits_of(&out, 0), bits_of(&out, 1), bits_of(&out, 2)],
        [0xA27A, 0x21AA, 0xA05B]
    );
    let norm = f16spec("first_stage_model.decoder.norm_out.weight", &[128]);
    assert_eq!(
        [bits_of(&norm, 0), bits_of(&norm, 1), bits_of(&norm, 2)],
        [0x3B3E, 0x3C31, 0x3B8F]
    );
    let bias = f16spec(
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.bias",
        &[768],
    );
    assert_eq!(
        [bits_of(&bias, 0), bits_of(&bias, 1), bits_of(&bias, 2)],
        [0xA113, 0x9998, 0x1249]
    );
    let emb = f16spec(
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
        &[49408, 768],
    );
    assert_eq!(
        [bits_of(&emb, 0), bits_of(&emb, 1), bits_of(&emb, 2)],
        [0x1E53, 0x238E, 0x2096]
    );
    let pin = f16spec(
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        &[320, 320, 1, 1],
    );
    assert_eq!(
        [bits_of(&pin, 0), bits_of(&pin, 1), bits_of(&pin, 2)],
        [0xA75B, 0x26B1, 0xAD71]
    );
    let ls = f16spec("conditioner.embedders.1.model.logit_scale", &[]);
    assert_eq!(bits_of(&ls, 0), 0x449B);
    // Seed 1 changes the key by xor.
    assert_eq!(fnv1a64(out.name.as_bytes()) ^ 1, 0xf71fefae161e678e);
}

#[test]
fn f16_conversion_edge_cases() {
    assert_eq!(f64_to_f16_bits(0.0), 0);
    assert_eq!(f64_to_f16_bits(-0.0), 0x8000);
    assert_eq!(f64_to_f16_bits(1.0), 0x3C00);
    assert_eq!(f64_to_f16_bits(-2.0), 0xC000);
    assert_eq!(f64_to_f16_bits(65504.0), 0x7BFF);
    // Smallest subnormal 2^-24 and the halfway point below it (ties to even -> 0).
    assert_eq!(f64_to_f16_bits(2f64.powi(-24)), 1);
    assert_eq!(f64_to_f16_bits(2f64.powi(-25)), 0);
    assert_eq!(f64_to_f16_bits(1.5 * 2f64.powi(-24)), 2);
    // A value where f64 -> f32 -> f16 double rounding differs from direct rounding:
    // 1 + 2^-11 + 2^-40 rounds up directly (above the tie) but to a tie (then even, down) via f32.
    let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
    assert_eq!(f64_to_f16_bits(x), 0x3C01);
}

fn check_against_manifest(
    arch: Arch,
    model: &str,
    n_tensors: usize,
    header_len: usize,
    file_len: u64,
) {
    let m = manifest(model);
    let list = m["tensors"].as_array().unwrap();
    let ours = recipe_tensors(arch, false);
    assert_eq!(ours.len(), n_tensors);
    assert_eq!(list.len(), ours.len());
    for (t, j) in ours.iter().zip(list) {
        assert_eq!(t.name, j["name"].as_str().unwrap());
        assert_eq!(t.dtype.name(), j["dtype"].as_str().unwrap(), "{}", t.name);
        let shape: Vec<usize> = j["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{}", t.name);
        let role = j["role"].as_str().unwrap();
        let gain = j.get("gain").and_then(|g| g.as_f64()).unwrap_or(1.0);
        match role_of(t) {
            Role::Index => assert_eq!(role, "index"),
            Role::Const(_) => assert_eq!(role, "const"),
            Role::Random { base, scale } => {
                let fan_in: usize = t.shape.iter().skip(1).product();
                let expect = match role {
                    "bias" | "embed" => (0.0, 0.02),
                    "norm" => (1.0, 0.1),
                    "fanin" => (0.0, gain * (3.0 / fan_in as f64).sqrt()),
                    r => panic!("{}: role {r}", t.name),
                };
                assert_eq!((base, scale), expect, "{}", t.name);
            }
        }
    }
    let header = header_bytes(&ours);
    assert_eq!(header.len(), header_len);
    let data: usize = ours.iter().map(|t| t.numel() * t.dtype.size()).sum();
    assert_eq!((8 + header.len() + data) as u64, file_len);
    // Per-tensor hashes of every tensor below 300k elements (the rest: heavy test).
    let mut checked = 0;
    let mut buf = Vec::new();
    for (t, j) in ours.iter().zip(list) {
        if t.numel() < 300_000 {
            buf.clear();
            tensor_bytes(t, 0, 0, t.numel(), &mut buf);
            assert_eq!(
                hex::encode(Sha256::digest(&buf)),
                j["sha256_s0"].as_str().unwrap(),
                "{}",
                t.name
            );
            checked += 1;
        }
    }
    assert!(checked > 100);
}

#[test]
fn sd15_layout_matches_manifest() {
    check_against_manifest(Arch::Sd15, "sd15", 1130, 154528, 2_132_625_150);
}

#[test]
fn sdxl_layout_matches_manifest() {
    check_against_manifest(Arch::Sdxl, "sdxl", 2515, 364784, 6_938_041_144);
}

fn sha256_file(p: &Path) -> String {
    let mut f = File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 22];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[test]
fn tiny_files_are_small_and_sorted() {
    let dir = tempfile::tempdir().unwrap();
    for arch in [Arch::Sd15, Arch::Sdxl] {
        let p = dir.path().join("tiny.safetensors");
        write_recipe_checkpoint(arch, true, 3, &p).unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len < 20_000_000, "{arch:?} tiny is {len} bytes");
        eprintln!("{arch:?} tiny: {len} bytes");
        // Re-parse with the safetensors crate: every tensor present with the planned shape.
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let specs = recipe_tensors(arch, true);
        assert_eq!(st.len(), specs.len());
        for s in &specs {
            assert_eq!(st.tensor(&s.name).unwrap().shape(), s.shape.as_slice());
        }
        // Same seed, same bytes; other seed, other bytes.
        let q = dir.path().join("tiny2.safetensors");
        write_recipe_checkpoint(arch, true, 3, &q).unwrap();
        assert_eq!(sha256_file(&p), sha256_file(&q));
        write_recipe_checkpoint(arch, true, 4, &q).unwrap();
        assert_ne!(sha256_file(&p), sha256_file(&q));
    }
}

fn full_file_hash(arch: Arch, expect: &str, len: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("recipe.safetensors");
    let t = std::time::Instant::now();
    write_recipe_checkpoint(arch, false, 0, &p).unwrap();
    eprintln!("{arch:?}: written in {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(std::fs::metadata(&p).unwrap().len(), len);
    assert_eq!(sha256_file(&p), expect);
    eprintln!(
        "{arch:?}: written + hashed in {:.1}s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "heavy: writes and hashes the 2.1 GB SD1.5 recipe file (~1.5 min); cargo test -p comfy-diffusion --release -- --ignored recipe_"]
fn recipe_sd15_full_sha256() {
    full_file_hash(
        Arch::Sd15,
        "c303fe271c31eb855a2b9ad0219bc82b0e6cd1111f84e807c3ce8464f5777f4a",
        2_132_625_150,
    );
}

#[test]
#[ignore = "heavy: writes and hashes the 6.9 GB SDXL recipe file (~6 min); cargo test -p comfy-diffusion --release -- --ignored recipe_"]
fn recipe_sdxl_full_sha256() {
    full_file_hash(
        Arch::Sdxl,
        "e12eadc321640f92fd64f74057ce7aed1de2b0e383633d2375b84f5dfc6f7670",
        6_938_041_144,
    );
}
