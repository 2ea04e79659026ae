//! `noise.safetensors` / `noise_default_cpu_capability.safetensors`: every vector bit for bit.
mod common;

use comfy_sampling::rng::{prepare_noise, NormalMath, TorchGenerator};
use common::*;

fn shape_of(s: &str) -> Vec<usize> {
    s.split('x').map(|v| v.parse().unwrap()).collect()
}

fn check_file(name: &str, math: NormalMath) -> usize {
    let tensors = load_tensors(name);
    let mut n = 0;
    for (key, want) in &tensors {
        let parts: Vec<&str> = key.split('/').collect();
        let seed_of = |p: &str| -> u64 { p.trim_start_matches("seed").parse().unwrap() };
        let got: Vec<f32> = match parts[0] {
            "prepare_noise" => {
                let shape = shape_of(parts[2]);
                assert_eq!(shape, want.shape, "{key}");
                prepare_noise(seed_of(parts[1]), &shape, None, math)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            }
            "prepare_noise_batch_index" => {
                let shape = shape_of(parts[2]);
                let idx: Option<Vec<usize>> = if parts[3] == "none" {
                    None
                } else {
                    Some(parts[3].split('_').map(|v| v.parse().unwrap()).collect())
                };
                let t = prepare_noise(seed_of(parts[1]), &shape, idx.as_deref(), math).unwrap();
                assert_eq!(t.dims(), &want.shape[..], "{key}");
                t.flatten_all().unwrap().to_vec1().unwrap()
            }
            "randn_1d" | "rand_1d" => {
                let n: usize = parts[2].trim_start_matches('n').parse().unwrap();
                let mut g = TorchGenerator::with_math(seed_of(parts[1]), math);
                if parts[0] == "randn_1d" {
                    g.randn(n)
                } else {
                    g.rand(n)
                }
            }
            "randn_sequence" => continue, // checked below, in call order
            other => panic!("unexpected golden group {other} in {key}"),
        };
        assert_bits(key, &got, &want.data);
        n += 1;
    }
    // Consecutive draws on one generator.
    let seq: Vec<(&String, &Golden)> = tensors
        .iter()
        .filter(|(k, _)| k.starts_with("randn_sequence/"))
        .collect();
    if !seq.is_empty() {
        let mut g = TorchGenerator::with_math(42, math);
        for call in 0..seq.len() {
            let (key, want) = seq
                .iter()
                .find(|(k, _)| k.contains(&format!("/call{call}_")))
                .unwrap_or_else(|| panic!("missing call{call}"));
            let len: usize = key.rsplit("_n").next().unwrap().parse().unwrap();
            assert_bits(key, &g.randn(len), &want.data);
            n += 1;
        }
    }
    n
}

#[test]
fn noise_avx2_path_bit_exact() {
    let n = check_file("noise.safetensors", NormalMath::Avx2);
    assert_eq!(n, 134);
}

#[test]
fn noise_default_capability_path_bit_exact() {
    let n = check_file("noise_default_cpu_capability.safetensors", NormalMath::Libm);
    assert_eq!(n, 47);
}

#[test]
fn mt19937_outputs_match_json() {
    let j = load_json("noise.json");
    let mt = &j["mt19937_u32"];
    let mut checked = 0;
    let mut g = TorchGenerator::new(42);
    for x in mt["seed42_first1000"].as_array().unwrap() {
        assert_eq!(g.random() as u64, x.as_u64().unwrap());
        checked += 1;
    }
    for (k, v) in mt["first4_per_seed"].as_object().unwrap() {
        let mut g = TorchGenerator::new(k.parse().unwrap());
        for x in v.as_array().unwrap() {
            assert_eq!(g.random() as u64, x.as_u64().unwrap(), "seed {k}");
            checked += 1;
        }
    }
    assert!(checked >= 1032, "checked only {checked} mt outputs");
}
