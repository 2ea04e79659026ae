//! Unit tests of the SD glue with stub models: the golden end-to-end step relations run
//! through the KSampler node, latent2rgb against the golden preview vectors, and the
//! conditioning evaluation (areas, timestep ranges, combine averaging).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use comfy_diffusion::checkpoint::Family;
use comfy_graph::node::{NoProgress, PreviewFormat, PreviewMethod, ProgressSink};
use comfy_graph::{CancelToken, ExecContext, Folders, Inputs, Node, Value};
use comfy_sampling::ModelSampling;
use serde_json::json;

use super::cond::{Area, CondEntry, CondOpts, Conditioning};
use super::guidance::{calc_cond_batch, prepare_conds};
use super::model::{AdmKind, DenoiseModel, SdModel};
use crate::ops::Array;
use crate::types::Latent;

/// The golden folder: `COMFY_GOLDEN_DIR`, else `<workspace>/../shared/golden`.
fn golden_dir() -> PathBuf {
    std::env::var_os("COMFY_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"))
}

fn load_golden(rel: &str) -> HashMap<String, Tensor> {
    let p = golden_dir().join(rel);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("golden file {} missing: {e}", p.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data: Vec<f32> = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (k, Tensor::from_vec(data, v.shape(), &Device::Cpu).unwrap())
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// A stub `apply_model` replaying ComfyUI's recorded CFG-combined predictions: at σ_k it
/// checks that the sampler state equals the golden `stepK/x` and returns `stepK/denoised`
/// for every row (so `uncond + (cond − uncond)·cfg` is that prediction exactly).
struct Replay {
    sigmas: Vec<f32>,
    x: Vec<Tensor>,
    denoised: Vec<Tensor>,
    mismatches: Mutex<Vec<String>>,
    calls: Mutex<usize>,
}

impl DenoiseModel for Replay {
    fn apply_model(&self, x: &Tensor, sigmas: &[f32], _context: &Tensor, y: Option<&Tensor>) -> candle_core::Result<Tensor> {
        *self.calls.lock().unwrap() += 1;
        let k = self.sigmas.iter().position(|s| *s == sigmas[0]).expect("σ not in the golden schedule");
        let rows = x.dim(0)?;
        if let Some(y) = y {
            if y.dim(0)? != rows {
                self.mismatches.lock().unwrap().push("y batch differs from x".into());
            }
        }
        for r in 0..rows {
            let row = x.narrow(0, r, 1)?;
            // step0/x (noise · √(1+σ0²), this crate's glue) must be bit-exact; later states
            // go through comfy-sampling's update rule, which is within 1 ulp of torch's.
            let d = (&row - &self.x[k])?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let scale = self.x[k].abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let exact = bits(&row) == bits(&self.x[k]);
            if (k == 0 && !exact) || d > scale * 2e-7 {
                self.mismatches.lock().unwrap().push(format!("step{k}/x row {r} differs (max |diff| {d}, max |x| {scale})"));
            }
        }
        self.denoised[k].repeat((rows, 1, 1, 1))
    }
}

fn ctx_run(node: &dyn Node, inputs: Inputs, progress: &dyn ProgressSink, preview: PreviewMethod) -> comfy_graph::Outputs {
    let folders = Folders::new("/nonexistent-sd-test");
    let cancel = CancelToken::new();
    let prompt = serde_json::Value::Null;
    let ctx = ExecContext {
        prompt_id: "p",
        node_id: "3",
        prompt: &prompt,
        extra_pnginfo: None,
        folders: &folders,
        cancel: &cancel,
        progress,
        preview_method: preview,
    };
    node.execute(&inputs, &ctx).unwrap()
}

#[derive(Default)]
struct Recorder {
    progress: Mutex<Vec<(u64, u64)>>,
    previews: Mutex<usize>,
}

impl ProgressSink for Recorder {
    fn progress(&self, value: u64, max: u64) {
        self.progress.lock().unwrap().push((value, max));
    }
    fn preview(&self, format: PreviewFormat, bytes: Vec<u8>) {
        assert_eq!(format, PreviewFormat::Jpeg);
        assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
        *self.previews.lock().unwrap() += 1;
    }
}

fn golden_ksampler(file: &str, family: Family, adm: AdmKind, ctx_dim: usize, pooled: usize, sampler: &str, scheduler: &str, steps: i64) {
    let g = load_golden(file);
    let sig: Vec<f32> = g["sigmas"].to_vec1().unwrap();
    let n = sig.len() - 1;
    let replay = Arc::new(Replay {
        sigmas: sig.clone(),
        x: (0..n).map(|k| g[&format!("step{k}/x")].clone()).collect(),
        denoised: (0..n).map(|k| g[&format!("step{k}/denoised")].clone()).collect(),
        mismatches: Mutex::new(vec![]),
        calls: Mutex::new(0),
    });
    let model = SdModel {
        net: replay.clone(),
        family,
        sampling: Arc::new(ModelSampling::default()),
        adm,
        source: None,
    };
    let cond = |v: f32| {
        let c = Tensor::full(v, (1, 77, ctx_dim), &Device::Cpu).unwrap();
        let p = Tensor::zeros((1, pooled), DType::F32, &Device::Cpu).unwrap();
        Value::object(Conditioning::single(c, Some(p)))
    };
    let latent = Latent::new(Tensor::zeros((1, 4, 32, 32), DType::F32, &Device::Cpu).unwrap());
    let mut i = Inputs::new();
    i.insert("model", Value::object(model));
    i.insert("seed", json!(42).into());
    i.insert("steps", json!(steps).into());
    i.insert("cfg", json!(7.0).into());
    i.insert("sampler_name", json!(sampler).into());
    i.insert("scheduler", json!(scheduler).into());
    i.insert("positive", cond(1.0));
    i.insert("negative", cond(-1.0));
    i.insert("latent_image", Value::object(latent));
    i.insert("denoise", json!(1.0).into());
    let rec = Recorder::default();
    let out = ctx_run(&super::sampling::ksampler::KSampler, i, &rec, PreviewMethod::Latent2Rgb);
    let l = out.values[0].downcast::<Latent>().unwrap();
    let m = replay.mismatches.lock().unwrap().clone();
    assert!(m.is_empty(), "{m:?}");
    assert_eq!(*replay.calls.lock().unwrap(), n, "one batched model call per step (cond + uncond)");
    let want = &g["final_latent"];
    let d = (&l.samples - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d <= scale * 2e-7, "final_latent max |diff| {d} (max |ref| {scale})");
    assert_eq!(*rec.progress.lock().unwrap(), (1..=n as u64).map(|v| (v, n as u64)).collect::<Vec<_>>());
    assert_eq!(*rec.previews.lock().unwrap(), n);
}

#[test]
fn sd15_golden_steps_through_ksampler() {
    golden_ksampler("pipeline/sd15_e2e_256x256_euler_normal_4steps_seed42_cfg7.safetensors", Family::Sd1, AdmKind::None, 768, 768, "euler", "normal", 4);
}

#[test]
fn sdxl_golden_ancestral_steps_through_ksampler() {
    golden_ksampler("pipeline/sdxl_e2e_256x256_euler_ancestral_karras_2steps_seed42_cfg7.safetensors", Family::Sdxl, AdmKind::Sdxl, 2048, 1280, "euler_ancestral", "karras", 2);
}

#[test]
fn latent2rgb_matches_golden_preview() {
    let g = load_golden("latent_preview.safetensors");
    let x0 = Array::from_tensor(&g["x0"]).unwrap();
    for (fmt, f) in [("SD15", super::model::SD15_PREVIEW), ("SDXL", super::model::SDXL_PREVIEW)] {
        let (h, w, lin) = super::preview::latent_to_rgb_linear(&x0, &f).unwrap();
        assert_eq!((h, w), (8, 8));
        let want_lin: Vec<f32> = g[&format!("{fmt}/preview_linear_hwc")].flatten_all().unwrap().to_vec1().unwrap();
        let max = lin.iter().zip(&want_lin).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max < 1e-6, "{fmt} linear max diff {max}");
        let want_u8: Vec<f32> = g[&format!("{fmt}/preview_uint8_hwc")].flatten_all().unwrap().to_vec1().unwrap();
        let got: Vec<f32> = lin.iter().map(|v| super::preview::to_preview_u8(*v) as f32).collect();
        assert_eq!(got, want_u8, "{fmt} uint8 preview");
    }
}

/// A stub returning `x0 = context[row, 0, 0]` everywhere (records the σs it saw).
struct ByContext;

impl DenoiseModel for ByContext {
    fn apply_model(&self, x: &Tensor, _sigmas: &[f32], context: &Tensor, _y: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let v: Vec<f32> = context.narrow(1, 0, 1)?.narrow(2, 0, 1)?.flatten_all()?.to_vec1()?;
        let data: Vec<f32> = v.iter().flat_map(|&k| std::iter::repeat(k).take(c * h * w)).collect();
        Tensor::from_vec(data, (b, c, h, w), x.device())
    }
}

fn stub_model() -> SdModel {
    SdModel { net: Arc::new(ByContext), family: Family::Sd1, sampling: Arc::new(ModelSampling::default()), adm: AdmKind::None, source: None }
}

fn entry(v: f32, opts: CondOpts) -> CondEntry {
    CondEntry { cond: Tensor::full(v, (1, 77, 8), &Device::Cpu).unwrap(), opts }
}

#[test]
fn area_entries_are_averaged_in_their_box() {
    let m = stub_model();
    let pos = Conditioning(vec![
        entry(1.0, CondOpts::default()),
        entry(3.0, CondOpts { area: Some(Area::Latent { h: 4, w: 4, y: 0, x: 0 }), strength: Some(1.0), ..Default::default() }),
    ]);
    let neg = Conditioning(vec![entry(-1.0, CondOpts::default())]);
    let (p, n) = prepare_conds(&m, &pos, Some(&neg), (8, 8)).unwrap();
    // The negative list gets a same-area entry with its own conditioning.
    let n = n.unwrap();
    assert_eq!(n.len(), 2);
    assert_eq!(n[1].area, Some([4, 4, 0, 0]));
    let x = Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let [c, u] = calc_cond_batch(&m, [Some(&p), Some(&n)], &x, 1.0).unwrap();
    let c = Array::from_tensor(&c).unwrap();
    let u = Array::from_tensor(&u).unwrap();
    // rr = min(8, 4 // 4) = 1: the box border weight is 1, so inside = (1 + 3) / 2.
    assert_eq!(c.data[0], 2.0);
    assert_eq!(c.data[3 * 8 + 3], 2.0);
    assert_eq!(c.data[4 * 8 + 4], 1.0);
    assert_eq!(c.data[7], 1.0);
    assert!(u.data.iter().all(|&v| v == -1.0));
}

#[test]
fn percentage_areas_and_feathering() {
    let m = stub_model();
    // 16x16 latent, area = right half (x offset 8): rr = min(8, 16 // 4 = 4)... width 8 // 4 = 2.
    let pos = Conditioning(vec![
        entry(0.0, CondOpts::default()),
        entry(4.0, CondOpts { area: Some(Area::Percentage { h: 1.0, w: 0.5, y: 0.0, x: 0.5 }), ..Default::default() }),
    ]);
    let (p, _) = prepare_conds(&m, &pos, None, (16, 16)).unwrap();
    assert_eq!(p[1].area, Some([16, 8, 0, 8]));
    let x = Tensor::zeros((1, 1, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let [c, _] = calc_cond_batch(&m, [Some(&p), None], &x, 1.0).unwrap();
    let c = Array::from_tensor(&c).unwrap();
    // Left edge of the box (x = 8) is feathered: weight 1/2 at t = 0, 1 at t = 1.
    let w0 = 0.5f32;
    assert_eq!(c.data[8], (4.0 * w0) / (1.0 + w0));
    assert_eq!(c.data[9], 2.0);
    assert_eq!(c.data[0], 0.0);
    assert_eq!(c.data[15], 2.0);
}

#[test]
fn timestep_range_excludes_entries() {
    let m = stub_model();
    let pos = Conditioning(vec![
        entry(1.0, CondOpts { start_percent: Some(0.0), end_percent: Some(0.5), ..Default::default() }),
        entry(5.0, CondOpts { start_percent: Some(0.5), end_percent: Some(1.0), ..Default::default() }),
    ]);
    let (p, _) = prepare_conds(&m, &pos, None, (4, 4)).unwrap();
    let x = Tensor::zeros((1, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let [hi, _] = calc_cond_batch(&m, [Some(&p), None], &x, 14.6).unwrap();
    let [lo, _] = calc_cond_batch(&m, [Some(&p), None], &x, 0.1).unwrap();
    assert!(Array::from_tensor(&hi).unwrap().data.iter().all(|&v| v == 1.0));
    assert!(Array::from_tensor(&lo).unwrap().data.iter().all(|&v| v == 5.0));
}

#[test]
fn masks_weight_entries() {
    let m = stub_model();
    let mut md = vec![0f32; 16];
    md[0] = 1.0;
    let mask = Tensor::from_vec(md, (1, 4, 4), &Device::Cpu).unwrap();
    let pos = Conditioning(vec![
        entry(2.0, CondOpts::default()),
        entry(6.0, CondOpts { mask: Some(mask), mask_strength: Some(1.0), ..Default::default() }),
    ]);
    let (p, _) = prepare_conds(&m, &pos, None, (4, 4)).unwrap();
    let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let [c, _] = calc_cond_batch(&m, [Some(&p), None], &x, 1.0).unwrap();
    let c = Array::from_tensor(&c).unwrap();
    assert_eq!(c.data[0], 4.0);
    assert_eq!(c.data[1], 2.0);
}

#[test]
fn custom_sampler_nodes_run_with_a_stub() {
    use super::objects::{GuiderObj, NoiseObj, SamplerObj};
    let m = stub_model();
    let c = Value::object(Conditioning::single(Tensor::full(0.25f32, (1, 77, 8), &Device::Cpu).unwrap(), None));
    let latent = Latent::new(Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap());
    let mut i = Inputs::new();
    i.insert("model", Value::object(m.clone()));
    i.insert("scheduler", json!("karras").into());
    i.insert("steps", json!(3).into());
    i.insert("denoise", json!(1.0).into());
    let sig = ctx_run(&super::sampling::basic_scheduler::BasicScheduler, i, &NoProgress, PreviewMethod::None);
    let s: Vec<f32> = sig.values[0].downcast::<Tensor>().unwrap().to_vec1().unwrap();
    assert_eq!(s.len(), 4);
    let mut g = Inputs::new();
    g.insert("noise", Value::object(NoiseObj::Random { seed: 1 }));
    g.insert("guider", Value::object(GuiderObj { model: m, positive: c.downcast::<Conditioning>().unwrap().clone(), negative: None, cfg: 1.0 }));
    g.insert("sampler", Value::object(SamplerObj { name: "euler".into() }));
    g.insert("sigmas", sig.values[0].clone());
    g.insert("latent_image", Value::object(latent));
    let rec = Recorder::default();
    let out = ctx_run(&super::sampling::sampler_custom_advanced::SamplerCustomAdvanced, g, &rec, PreviewMethod::None);
    // The stub always predicts x0 = 0.25 (model space): euler ends exactly there.
    let o = out.values[0].downcast::<Latent>().unwrap();
    let d = out.values[1].downcast::<Latent>().unwrap();
    let want = 0.25f32 / 0.18215;
    let got = Array::from_tensor(&o.samples).unwrap();
    assert!(got.data.iter().all(|v| (v - want).abs() < 1e-4), "{:?}", &got.data[..4]);
    assert!(Array::from_tensor(&d.samples).unwrap().data.iter().all(|v| *v == want));
    assert_eq!(rec.progress.lock().unwrap().len(), 3);
    assert_eq!(*rec.previews.lock().unwrap(), 0);
}

#[test]
fn interrupt_stops_sampling_within_a_step() {
    struct Interrupting(CancelToken);
    impl DenoiseModel for Interrupting {
        fn apply_model(&self, x: &Tensor, _s: &[f32], _c: &Tensor, _y: Option<&Tensor>) -> candle_core::Result<Tensor> {
            self.0.interrupt();
            Ok(x.zeros_like()?)
        }
    }
    let cancel = CancelToken::new();
    let m = SdModel { net: Arc::new(Interrupting(cancel.clone())), ..stub_model() };
    let c = Conditioning::single(Tensor::zeros((1, 77, 8), DType::F32, &Device::Cpu).unwrap(), None);
    let latent = Latent::new(Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap());
    let folders = Folders::new("/nonexistent-sd-test");
    let prompt = serde_json::Value::Null;
    let rec = Recorder::default();
    let ctx = ExecContext {
        prompt_id: "p",
        node_id: "3",
        prompt: &prompt,
        extra_pnginfo: None,
        folders: &folders,
        cancel: &cancel,
        progress: &rec,
        preview_method: PreviewMethod::None,
    };
    let job = super::run::SampleJob {
        model: &m,
        positive: &c,
        negative: Some(&c),
        cfg: 7.0,
        sampler: "euler",
        sigmas: vec![14.6, 5.0, 1.0, 0.0],
        latent: &latent,
        noise: super::objects::NoiseObj::Random { seed: 0 },
        seed: 0,
    };
    let e = super::run::sample(job, &ctx).err().expect("interrupted");
    assert!(matches!(e, comfy_graph::NodeError::Interrupted));
    assert_eq!(rec.progress.lock().unwrap().len(), 1, "stops after the step in progress");
}
