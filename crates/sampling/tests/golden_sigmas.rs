//! `sigmas.safetensors` / `sigmas.json`: model-sampling tables, every schedule, KSampler lists.
mod common;

use comfy_sampling::schedule::{ksampler_sigmas, ModelSampling, SCHEDULER_NAMES};
use common::*;

fn assert_rel(key: &str, got: &[f32], want: &[f32], rel: f64) {
    assert_eq!(got.len(), want.len(), "{key}: length (got {got:?})");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{key}[{i}]: want nan, got {g}");
            continue;
        }
        let (g, w) = (*g as f64, *w as f64);
        let tol = rel * w.abs().max(1e-30);
        assert!(
            (g - w).abs() <= tol,
            "{key}[{i}]: got {g} want {w} (rel {:e})",
            (g - w).abs() / w.abs()
        );
    }
}

#[test]
fn model_sampling_tables() {
    let t = load_tensors("sigmas.safetensors");
    let j = load_json("sigmas.json");
    let ms = ModelSampling::default();
    assert_bits("sigmas", &ms.sigmas, &t["model_sampling/sigmas"].data);
    assert_bits(
        "log_sigmas",
        &ms.log_sigmas,
        &t["model_sampling/log_sigmas"].data,
    );
    // timestep(σ): exact integers.
    let inp = &t["model_sampling/timestep_input_sigmas"].data;
    let out = &t["model_sampling/timestep_output"].data;
    for (s, w) in inp.iter().zip(out) {
        assert_eq!(ms.timestep(*s), *w, "timestep({s})");
    }
    // sigma(t)
    let inp = &t["model_sampling/sigma_input_timesteps"].data;
    let got: Vec<f32> = inp.iter().map(|x| ms.sigma(*x)).collect();
    assert_rel(
        "sigma(t)",
        &got,
        &t["model_sampling/sigma_output"].data,
        1e-6,
    );
    // percent_to_sigma
    let pts = j["model_sampling"]["percent_to_sigma"].as_object().unwrap();
    assert!(pts.len() >= 7);
    for (p, want) in pts {
        let got = ms.percent_to_sigma(p.parse().unwrap());
        let want = jf(want);
        assert!(
            (got - want).abs() <= 1e-6 * want.abs(),
            "percent_to_sigma({p}): {got} vs {want}"
        );
    }
}

#[test]
fn every_schedule() {
    let t = load_tensors("sigmas.safetensors");
    let ms = ModelSampling::default();
    let mut n = 0;
    let mut exact = 0;
    for (key, want) in t.iter().filter(|(k, _)| k.starts_with("schedule/")) {
        let parts: Vec<&str> = key.split('/').collect();
        assert!(SCHEDULER_NAMES.contains(&parts[1]), "{key}");
        let steps: usize = parts[2].trim_start_matches("steps").parse().unwrap();
        let got = ms.calculate_sigmas(parts[1], steps).unwrap();
        assert_rel(key, &got, &want.data, 1e-6);
        if got
            .iter()
            .zip(&want.data)
            .all(|(a, b)| a.to_bits() == b.to_bits())
        {
            exact += 1;
        } else {
            eprintln!("not bit-exact: {key}");
        }
        n += 1;
    }
    assert_eq!(n, 54);
    eprintln!("{exact}/54 schedules bit-exact");
}

#[test]
fn every_ksampler_sigma_list() {
    let t = load_tensors("sigmas.safetensors");
    let ms = ModelSampling::default();
    let mut n = 0;
    for (key, want) in t.iter().filter(|(k, _)| k.starts_with("ksampler/")) {
        let parts: Vec<&str> = key.split('/').collect();
        let rest = parts[3].trim_start_matches("steps");
        let (steps, denoise) = rest.split_once("_denoise").unwrap();
        let got = ksampler_sigmas(
            &ms,
            parts[1],
            parts[2],
            steps.parse().unwrap(),
            denoise.parse().unwrap(),
        )
        .unwrap();
        assert_rel(key, &got, &want.data, 1e-6);
        n += 1;
    }
    assert_eq!(n, 72);
}
