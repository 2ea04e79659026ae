//! Tests of the LoRA, diffusion-model and text-encoder loaders on tiny recipe checkpoints.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use comfy_diffusion::checkpoint::{Checkpoint, ClipKind, Family, UNET_PREFIX};
use comfy_diffusion::recipe::{self, Arch};
use comfy_graph::{ErrorCategory, Folders, Inputs, Node, NodeRegistry, Value};
use serde_json::json;

use super::clip_loader::CLIPLoader;
use super::dual_clip_loader::DualCLIPLoader;
use super::lora_loader::LoraLoader;
use super::lora_loader_model_only::LoraLoaderModelOnly;
use super::unet_loader::UNETLoader;
use crate::sd::loading::{apply_lora, load_checkpoint, load_text_encoder, load_unet};
use crate::sd::model::{SdClip, SdModel};
use crate::sd::schema_tests::{differences_from_spec, spec_object_info};

const CKPT: &str = "tiny15.safetensors";

/// A base directory with the tiny SD1.5 recipe checkpoint in `models/checkpoints`.
fn base() -> (tempfile::TempDir, Folders) {
    let dir = tempfile::tempdir().unwrap();
    let folders = Folders::new(dir.path());
    folders.create_all().unwrap();
    recipe::write_recipe_checkpoint(Arch::Sd15, true, 0, &dir.path().join("models/checkpoints").join(CKPT)).unwrap();
    (dir, folders)
}

/// Writes float32 tensors as a safetensors file.
fn write_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

/// Copies the tensors of `src` whose names `rename` maps, under the new names (stored dtype).
fn copy_renamed(src: &Path, dst: &Path, rename: impl Fn(&str) -> Option<String>) {
    let ck = Checkpoint::open(src).unwrap();
    let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in ck.names() {
        if let Some(new) = rename(name) {
            let (info, bytes) = ck.raw(name).unwrap();
            let dt = match info.dtype {
                comfy_diffusion::checkpoint::StoredDtype::F16 => safetensors::Dtype::F16,
                comfy_diffusion::checkpoint::StoredDtype::I64 => safetensors::Dtype::I64,
                _ => safetensors::Dtype::F32,
            };
            data.push((new, dt, info.shape.clone(), bytes.to_vec()));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    safetensors::tensor::serialize_to_file(views, None, dst).unwrap();
}

fn rand(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| recipe::uniform(seed, i as u64) as f32 * scale).collect()
}

/// A LoRA for the tiny SD1.5 model: one UNet conv (kohya LDM names), one UNet attention
/// linear (kohya diffusers names), one text-encoder projection, and keys of nothing.
fn write_lora(folders: &Folders, name: &str) -> PathBuf {
    let path = folders.model_folder("loras").unwrap().dirs[0].join(name);
    write_f32(
        &path,
        &[
            ("lora_unet_input_blocks_1_1_proj_in.lora_up.weight".into(), vec![32, 4, 1, 1], rand(1, 128, 1.0)),
            ("lora_unet_input_blocks_1_1_proj_in.lora_down.weight".into(), vec![4, 32, 1, 1], rand(2, 128, 1.0)),
            ("lora_unet_input_blocks_1_1_proj_in.alpha".into(), vec![], vec![4.0]),
            ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight".into(), vec![32, 2], rand(3, 64, 1.0)),
            ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight".into(), vec![2, 64], rand(4, 128, 1.0)),
            ("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight".into(), vec![64, 2], rand(5, 128, 1.0)),
            ("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight".into(), vec![2, 64], rand(6, 128, 1.0)),
            ("lora_unet_not_a_layer.lora_up.weight".into(), vec![2, 1], vec![0.0, 0.0]),
            ("lora_unet_not_a_layer.lora_down.weight".into(), vec![1, 2], vec![0.0, 0.0]),
        ],
    );
    path
}

fn denoise(m: &SdModel) -> Vec<f32> {
    let x = Tensor::new(rand(7, 4 * 8 * 8, 1.0), &Device::Cpu).unwrap().reshape((1, 4, 8, 8)).unwrap();
    let ctx = Tensor::new(rand(8, 77 * 64, 1.0), &Device::Cpu).unwrap().reshape((1, 77, 64)).unwrap();
    m.net.apply_model(&x, &[3.0], &ctx, None).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn encode(c: &SdClip) -> Vec<f32> {
    let tokens = c.model.tokenize("a cabin in the snow");
    let (cond, _) = c.model.encode(&tokens, c.layer_idx).unwrap();
    cond.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

fn run(node: &dyn Node, folders: &Folders, inputs: Vec<(&str, Value)>) -> Result<Vec<Value>, comfy_graph::NodeError> {
    let mut ins = Inputs::new();
    for (k, v) in inputs {
        ins.insert(k, v);
    }
    crate::values::testing::run_with(node, ins, folders, &json!({}), None).map(|o| o.values)
}

fn s(v: &str) -> Value {
    Value::Json(json!(v))
}

fn f(v: f64) -> Value {
    Value::Json(json!(v))
}

#[test]
fn lora_patches_model_and_clip_and_strength_zero_keeps_them_exact() {
    let (_dir, folders) = base();
    write_lora(&folders, "style.safetensors");
    let ck = load_checkpoint(&folders, CKPT).unwrap();
    let (m, c) = (ck.model.clone(), ck.clip.clone().unwrap());
    let (base_x0, base_cond) = (denoise(&m), encode(&c));

    // Strength 0 for the model, 1 for the CLIP: the model's output is the base one, bit for
    // bit; the CLIP's is not.
    let lora = |strength_model: f64, strength_clip: f64| {
        run(
            &LoraLoader,
            &folders,
            vec![
                ("model", Value::object(m.clone())),
                ("clip", Value::object(c.clone())),
                ("lora_name", s("style.safetensors")),
                ("strength_model", f(strength_model)),
                ("strength_clip", f(strength_clip)),
            ],
        )
        .unwrap()
    };
    let out = lora(0.0, 1.0);
    let m0 = out[0].downcast::<SdModel>().unwrap();
    let c1 = out[1].downcast::<SdClip>().unwrap();
    assert_eq!(denoise(m0), base_x0);
    let cond1 = encode(c1);
    assert_eq!(cond1.len(), base_cond.len());
    assert_ne!(cond1, base_cond);
    assert!(c1.source.is_none(), "a patched CLIP must not claim its file's weights");

    // Model strength 0.8: the model changes, the CLIP (strength 0) stays exact.
    let out = lora(0.8, 0.0);
    let m1 = out[0].downcast::<SdModel>().unwrap();
    assert_eq!(encode(out[1].downcast::<SdClip>().unwrap()), base_cond);
    let x1 = denoise(m1);
    assert_ne!(x1, base_x0);
    assert!(x1.iter().all(|v| v.is_finite()));
    assert!(m1.source.is_none());

    // Two LoRA nodes in a row add up: 0.5 then 0.3 equals 0.8 at once (same float32 sums up to
    // rounding).
    let half = apply_lora(&folders, "style.safetensors", Some(&m), None, 0.5, 0.0).unwrap().model.unwrap();
    let both = apply_lora(&folders, "style.safetensors", Some(&half), None, 0.3, 0.0).unwrap().model.unwrap();
    let x2 = denoise(&both);
    let max = x1.iter().zip(&x2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max < 1e-3, "stacked LoRAs differ from one at the summed strength by {max}");

    // LoraLoaderModelOnly with strength 0 returns the model itself.
    let out = run(
        &LoraLoaderModelOnly,
        &folders,
        vec![("model", Value::object(m.clone())), ("lora_name", s("style.safetensors")), ("strength_model", f(0.0))],
    )
    .unwrap();
    assert_eq!(denoise(out[0].downcast::<SdModel>().unwrap()), base_x0);
}

#[test]
fn lora_reports_keys_it_did_not_load() {
    let (_dir, folders) = base();
    write_lora(&folders, "style.safetensors");
    let ck = load_checkpoint(&folders, CKPT).unwrap();
    let both = apply_lora(&folders, "style.safetensors", Some(&ck.model), ck.clip.as_ref(), 1.0, 1.0).unwrap();
    assert_eq!(
        both.not_loaded,
        vec!["lora_unet_not_a_layer.lora_down.weight".to_string(), "lora_unet_not_a_layer.lora_up.weight".to_string()]
    );
    // Model only: the text-encoder keys are not loaded either (as ComfyUI logs them).
    let model_only = apply_lora(&folders, "style.safetensors", Some(&ck.model), None, 1.0, 0.0).unwrap();
    assert!(model_only.not_loaded.contains(&"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight".to_string()));
    assert_eq!(model_only.not_loaded.len(), 4);
}

#[test]
fn missing_lora_file_is_missing_model() {
    let (_dir, folders) = base();
    let ck = load_checkpoint(&folders, CKPT).unwrap();
    let e = apply_lora(&folders, "nope.safetensors", Some(&ck.model), None, 1.0, 0.0).err().unwrap();
    assert_eq!(e.category(), ErrorCategory::MissingModel);
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
    // An unreadable file too.
    let bad = folders.model_folder("loras").unwrap().dirs[0].join("broken.safetensors");
    std::fs::write(&bad, b"not a safetensors file at all").unwrap();
    let e = apply_lora(&folders, "broken.safetensors", Some(&ck.model), None, 1.0, 0.0).err().unwrap();
    assert_eq!(e.category(), ErrorCategory::MissingModel);
}

#[test]
fn unet_loader_reads_a_bare_diffusion_model() {
    let (dir, folders) = base();
    let src = dir.path().join("models/checkpoints").join(CKPT);
    copy_renamed(&src, &dir.path().join("models/unet/bare.safetensors"), |n| n.strip_prefix(UNET_PREFIX).map(str::to_string));
    copy_renamed(&src, &dir.path().join("models/diffusion_models/prefixed.safetensors"), |n| {
        n.starts_with(UNET_PREFIX).then(|| n.to_string())
    });
    let ck = load_checkpoint(&folders, CKPT).unwrap();
    let want = denoise(&ck.model);
    let out = run(&UNETLoader, &folders, vec![("unet_name", s("bare.safetensors")), ("weight_dtype", s("default"))]).unwrap();
    let m = out[0].downcast::<SdModel>().unwrap();
    assert_eq!(m.family, Family::Sd1);
    assert_eq!(denoise(m), want);
    let m2 = load_unet(&folders, "prefixed.safetensors", "default").unwrap();
    assert_eq!(denoise(&m2), want);
    // fp8 storage rounds the weights: close to, not equal to, the full-precision output.
    let m8 = load_unet(&folders, "bare.safetensors", "fp8_e4m3fn").unwrap();
    let x8 = denoise(&m8);
    assert_ne!(x8, want);
    assert!(x8.iter().all(|v| v.is_finite()));
    // LoRA on a UNETLoader model.
    write_lora(&folders, "style.safetensors");
    let patched = apply_lora(&folders, "style.safetensors", Some(m), None, 1.0, 0.0).unwrap().model.unwrap();
    assert_ne!(denoise(&patched), want);
    // Not a UNet, and a missing file.
    let e = load_unet(&folders, "nope.safetensors", "default").err().unwrap();
    assert_eq!(e.category(), ErrorCategory::MissingModel);
    copy_renamed(&src, &dir.path().join("models/unet/vae_only.safetensors"), |n| {
        n.strip_prefix("first_stage_model.").map(str::to_string)
    });
    let e = load_unet(&folders, "vae_only.safetensors", "default").err().unwrap();
    assert_eq!(e.category(), ErrorCategory::MissingModel);
    assert!(e.to_string().contains("Could not detect model type"), "{e}");
}

#[test]
fn clip_loaders_read_standalone_text_encoders() {
    let (dir, folders) = base();
    let src = dir.path().join("models/checkpoints").join(CKPT);
    // SD1: a CLIP-L file with the HF `text_model.` names (the prefix stripped).
    copy_renamed(&src, &dir.path().join("models/text_encoders/clip_l.safetensors"), |n| {
        n.strip_prefix("cond_stage_model.transformer.").map(str::to_string)
    });
    let ck = load_checkpoint(&folders, CKPT).unwrap();
    let base_clip = ck.clip.clone().unwrap();
    let out = run(&CLIPLoader, &folders, vec![("clip_name", s("clip_l.safetensors")), ("type", s("stable_diffusion"))]).unwrap();
    let c = out[0].downcast::<SdClip>().unwrap();
    assert_eq!(c.model.family(), Family::Sd1);
    assert_eq!(encode(c), encode(&base_clip));
    // LoRA on a CLIPLoader CLIP.
    write_lora(&folders, "style.safetensors");
    let patched = apply_lora(&folders, "style.safetensors", None, Some(c), 0.0, 1.0).unwrap().clip.unwrap();
    assert_ne!(encode(&patched), encode(c));
    // Other families' types are refused with a clear error.
    let e = run(&CLIPLoader, &folders, vec![("clip_name", s("clip_l.safetensors")), ("type", s("sd3"))]).err().unwrap();
    assert_eq!(e.category(), ErrorCategory::InvalidInput);

    // SDXL: CLIP-L from the tiny SDXL recipe, and a CLIP-G in OpenCLIP layout deepened to 32
    // layers (ComfyUI tells CLIP-G by its layer 30).
    let xl = dir.path().join("xl.safetensors");
    recipe::write_recipe_checkpoint(Arch::Sdxl, true, 0, &xl).unwrap();
    copy_renamed(&xl, &dir.path().join("models/clip/xl_l.safetensors"), |n| {
        n.strip_prefix("conditioner.embedders.0.transformer.").map(str::to_string)
    });
    let g_prefix = "conditioner.embedders.1.model.";
    let xck = Checkpoint::open(&xl).unwrap();
    let mut g: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    for name in xck.names_with_prefix(g_prefix) {
        let rel = &name[g_prefix.len()..];
        let t = xck.tensor(name, DType::F32, &Device::Cpu).unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        match rel.strip_prefix("transformer.resblocks.") {
            Some(rest) => {
                let (i, tail) = rest.split_once('.').unwrap();
                let i: usize = i.parse().unwrap();
                for layer in (0..32).filter(|l| l % 3 == i) {
                    g.push((format!("transformer.resblocks.{layer}.{tail}"), t.dims().to_vec(), v.clone()));
                }
            }
            None => g.push((rel.to_string(), t.dims().to_vec(), v)),
        }
    }
    write_f32(&dir.path().join("models/clip/xl_g.safetensors"), &g);
    let g_enc = load_text_encoder(&folders, "xl_g.safetensors").unwrap();
    assert_eq!(g_enc.part.config.kind, ClipKind::G);
    assert_eq!(g_enc.part.config.layers, 32);
    // Either order gives CLIP-L then CLIP-G.
    for (a, b) in [("xl_g.safetensors", "xl_l.safetensors"), ("xl_l.safetensors", "xl_g.safetensors")] {
        let out = run(&DualCLIPLoader, &folders, vec![("clip_name1", s(a)), ("clip_name2", s(b)), ("type", s("sdxl"))]).unwrap();
        let c = out[0].downcast::<SdClip>().unwrap();
        assert_eq!(c.model.family(), Family::Sdxl);
        let kinds: Vec<ClipKind> = c.model.encoders().iter().map(|e| e.config.kind).collect();
        assert_eq!(kinds, vec![ClipKind::L, ClipKind::G]);
        let tokens = c.model.tokenize("a cabin");
        let (cond, pooled) = c.model.encode(&tokens, None).unwrap();
        assert_eq!(cond.dims(), &[1, 77, 128]);
        assert_eq!(pooled.dims(), &[1, 64]);
    }
    let e = run(
        &DualCLIPLoader,
        &folders,
        vec![("clip_name1", s("xl_l.safetensors")), ("clip_name2", s("xl_l.safetensors")), ("type", s("sdxl"))],
    )
    .err()
    .unwrap();
    assert_eq!(e.category(), ErrorCategory::InvalidInput);
}

#[test]
fn loader_schemas_match_object_info_core() {
    let expected = spec_object_info();
    let dir = tempfile::tempdir().unwrap();
    let folders = Folders::new(dir.path());
    folders.create_all().unwrap();
    // The spec was captured with empty loras / diffusion_models / text_encoders folders.
    let mut reg = NodeRegistry::new();
    super::register_loaders(&mut reg);
    assert_eq!(reg.len(), 5);
    let failures = differences_from_spec(&reg, &folders, &expected, &[]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // With files present, each file combo lists its folder (`models/clip` is `text_encoders`,
    // `models/unet` is `diffusion_models`).
    for (sub, node, input) in [
        ("loras", "LoraLoader", "lora_name"),
        ("unet", "UNETLoader", "unet_name"),
        ("clip", "CLIPLoader", "clip_name"),
        ("text_encoders", "DualCLIPLoader", "clip_name2"),
    ] {
        std::fs::create_dir_all(dir.path().join("models").join(sub)).unwrap();
        std::fs::write(dir.path().join("models").join(sub).join(format!("{sub}_a.safetensors")), b"x").unwrap();
        let got = reg.schema(node).unwrap().to_object_info(&folders);
        assert!(
            got["input"]["required"][input][0].as_array().unwrap().contains(&json!(format!("{sub}_a.safetensors"))),
            "{node}.{input}: {}",
            got["input"]["required"][input]
        );
    }
}

#[test]
fn sdxl_lora_patches_the_openclip_g_rows_and_projection() {
    let (dir, folders) = base();
    recipe::write_recipe_checkpoint(Arch::Sdxl, true, 0, &dir.path().join("models/checkpoints/xl.safetensors")).unwrap();
    let lora = |entries: &[(&str, usize, usize)], name: &str| {
        let mut t = Vec::new();
        for (i, (k, out, inp)) in entries.iter().enumerate() {
            t.push((format!("{k}.lora_up.weight"), vec![*out, 2], rand(20 + i as u64, out * 2, 1.0)));
            t.push((format!("{k}.lora_down.weight"), vec![2, *inp], rand(40 + i as u64, 2 * inp, 1.0)));
        }
        write_f32(&folders.model_folder("loras").unwrap().dirs[0].join(name), &t);
    };
    lora(&[("lora_te2_text_model_encoder_layers_1_self_attn_q_proj", 64, 64)], "g_rows.safetensors");
    lora(&[("lora_te2_text_projection", 64, 64)], "g_proj.safetensors");
    lora(&[("lora_te1_text_model_encoder_layers_0_mlp_fc1", 256, 64), ("lora_unet_input_blocks_3_1_proj_in", 64, 64)], "l_unet.safetensors");
    let ck = load_checkpoint(&folders, "xl.safetensors").unwrap();
    let (m, c) = (ck.model.clone(), ck.clip.clone().unwrap());
    let enc = |c: &SdClip| {
        let (cond, pooled) = c.model.encode(&c.model.tokenize("a cabin"), None).unwrap();
        let v = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (v(cond), v(pooled))
    };
    let (cond0, pooled0) = enc(&c);
    // q rows of CLIP-G layer 1: the conditioning changes (its CLIP-G half), CLIP-L's half not.
    let c1 = apply_lora(&folders, "g_rows.safetensors", None, Some(&c), 0.0, 1.0).unwrap().clip.unwrap();
    let (cond1, _) = enc(&c1);
    let halves = |v: &[f32]| -> (Vec<f32>, Vec<f32>) {
        let (mut l, mut g) = (Vec::new(), Vec::new());
        for row in v.chunks(128) {
            l.extend_from_slice(&row[..64]);
            g.extend_from_slice(&row[64..]);
        }
        (l, g)
    };
    let ((l0, g0), (l1, g1)) = (halves(&cond0), halves(&cond1));
    assert_eq!(l1, l0);
    assert_ne!(g1, g0);
    // The projection patch changes only the pooled output.
    let c2 = apply_lora(&folders, "g_proj.safetensors", None, Some(&c), 0.0, 1.0).unwrap().clip.unwrap();
    let (cond2, pooled2) = enc(&c2);
    assert_eq!(cond2, cond0);
    assert_ne!(pooled2, pooled0);
    // A CLIP-L + UNet LoRA: CLIP-G's half stays, CLIP-L's moves; the UNet output moves.
    let out = apply_lora(&folders, "l_unet.safetensors", Some(&m), Some(&c), 1.0, 1.0).unwrap();
    assert!(out.not_loaded.is_empty(), "{:?}", out.not_loaded);
    let (cond3, _) = enc(&out.clip.unwrap());
    let (l3, g3) = halves(&cond3);
    assert_ne!(l3, l0);
    assert_eq!(g3, g0);
    let x = Tensor::new(rand(7, 4 * 8 * 8, 1.0), &Device::Cpu).unwrap().reshape((1, 4, 8, 8)).unwrap();
    let ctx = Tensor::new(rand(8, 77 * 128, 1.0), &Device::Cpu).unwrap().reshape((1, 77, 128)).unwrap();
    let y = Tensor::new(rand(9, 64 + 6 * 256, 1.0), &Device::Cpu).unwrap().reshape((1, 64 + 6 * 256)).unwrap();
    let run = |m: &SdModel| m.net.apply_model(&x, &[2.0], &ctx, Some(&y)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(run(&out.model.unwrap()), run(&m));
}
