//! `cfg.safetensors`: `cfg_function` and `sampling_function` (cfg = 1 shortcut) bit for bit.
mod common;

use candle_core::{Device, Tensor};
use comfy_sampling::cfg::{cfg_function, CfgGuider, CondKind, Denoiser, ModelFn};
use comfy_sampling::Result;
use common::*;

fn t(g: &Golden) -> Tensor {
    Tensor::from_vec(g.data.clone(), g.shape.as_slice(), &Device::Cpu).unwrap()
}

fn v(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The model behind the `sampling_function` vectors (inferred from them; not in the README):
/// `0.8·tanh(x)` for cond rows and `0.5·tanh(x)` for uncond rows. Counts uncond rows.
struct TanhModel {
    uncond_rows: usize,
}

impl ModelFn for TanhModel {
    fn apply(&mut self, x: &Tensor, _s: &[f32], kinds: &[CondKind]) -> Result<Tensor> {
        let rows = kinds.len();
        let xs = v(x);
        let per = xs.len() / rows;
        self.uncond_rows += kinds.iter().filter(|k| **k == CondKind::Uncond).count();
        let out: Vec<f32> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.tanh()
                    * if kinds[i / per] == CondKind::Cond {
                        0.8f32
                    } else {
                        0.5f32
                    }
            })
            .collect();
        Ok(Tensor::from_vec(out, x.dims(), x.device())?)
    }
}

#[test]
fn cfg_function_bit_exact_for_every_scale() {
    let g = load_tensors("cfg.safetensors");
    let (cond, uncond) = (t(&g["cond_pred"]), t(&g["uncond_pred"]));
    let mut n = 0;
    for (k, want) in g.iter().filter(|(k, _)| k.starts_with("cfg_function/")) {
        let scale: f64 = k.trim_start_matches("cfg_function/scale").parse().unwrap();
        let got = cfg_function(&cond, &uncond, scale).unwrap();
        assert_bits(k, &v(&got), &want.data);
        n += 1;
    }
    assert_eq!(n, 8);
}

#[test]
fn sampling_function_cfg1_shortcut_bit_exact() {
    let g = load_tensors("cfg.safetensors");
    let j = load_json("cfg.json");
    let cases = j["sampling_function_cases"].as_object().unwrap();
    assert_eq!(cases.len(), 5);
    let x = t(&g["x"]);
    let sigma = g["sigma"].data[0];
    for (k, case) in cases {
        let scale = case["cond_scale"].as_f64().unwrap();
        let disable = case["disable_cfg1_optimization"].as_bool().unwrap();
        let model = TanhModel { uncond_rows: 0 };
        let mut guider = CfgGuider::new(model, scale);
        let out = guider.denoise(&x, sigma, disable).unwrap();
        // torch's vectorised tanh differs from libm by 1 ulp on some inputs, so the model
        // outputs are compared with a tolerance; the CFG step itself must be bit-exact.
        let b = x.dim(0).unwrap();
        let mut probe = TanhModel { uncond_rows: 0 };
        let cond = probe
            .apply(&x, &vec![sigma; b], &vec![CondKind::Cond; b])
            .unwrap();
        let uncond = probe
            .apply(&x, &vec![sigma; b], &vec![CondKind::Uncond; b])
            .unwrap();
        let expect = if case["uncond_evaluated"].as_bool().unwrap() {
            cfg_function(&cond, &uncond, scale).unwrap()
        } else {
            cond
        };
        assert_bits(k, &v(&out.denoised), &v(&expect));
        let err = max_abs(&v(&out.denoised), &g[k.as_str()].data);
        assert!(err <= 1e-6, "{k}: {err:e} from ComfyUI");
        let evaluated = guider.model.uncond_rows > 0;
        assert_eq!(
            evaluated,
            case["uncond_evaluated"].as_bool().unwrap(),
            "{k}"
        );
    }
}
