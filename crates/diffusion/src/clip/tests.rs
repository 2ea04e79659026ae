use super::adm::{sdxl_adm, sdxl_refiner_adm, timestep_embedding_256, SdxlSize};
use super::*;
use crate::recipe::{self, Arch};
use crate::tokenizer::tests::golden_dir;
use std::path::Path;

fn read_golden(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::F32);
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, v.shape().to_vec(), data)
        })
        .collect()
}

fn get<'a>(g: &'a [(String, Vec<usize>, Vec<f32>)], name: &str) -> (&'a [usize], &'a [f32]) {
    let (_, s, d) = g
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("golden tensor {name} missing"));
    (s, d)
}

fn max_abs_diff(a: &Tensor, b: &[f32]) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn adm_matches_golden() {
    let g = read_golden(&golden_dir().join("sdxl_adm.safetensors"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("sdxl_adm.json")).unwrap())
            .unwrap();
    // Frequencies: the embedded table is torch's.
    let freqs: Vec<f32> = json["freqs_f32"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(adm::freqs_256().to_vec(), freqs);
    for t in json["timestep_embedding_values"].as_array().unwrap() {
        let key = if let Some(i) = t.as_u64() {
            format!("timestep_embedding_256/{i}")
        } else {
            format!("timestep_embedding_256/{:?}", t.as_f64().unwrap())
        };
        let t = t.as_f64().unwrap();
        let (_, want) = get(&g, &key);
        let got = timestep_embedding_256(t);
        let d = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d <= 2.4e-7, "{key}: max diff {d}");
    }
    let (ps, pd) = get(&g, "pooled_output");
    let pooled = Tensor::from_vec(pd.to_vec(), (ps[0], ps[1]), &Device::Cpu).unwrap();
    for c in json["cases"].as_array().unwrap() {
        let f = |k: &str| c[k].as_f64().unwrap();
        let size = if c.get("width").is_some() {
            SdxlSize {
                width: f("width"),
                height: f("height"),
                crop_w: f("crop_w"),
                crop_h: f("crop_h"),
                target_width: f("target_width"),
                target_height: f("target_height"),
            }
        } else {
            // What a plain CLIPTextEncode cond gets for a [1,4,128,96] latent.
            SdxlSize::from_latent(96, 128)
        };
        let key = c["key"].as_str().unwrap();
        let (shape, want) = get(&g, key);
        let y = sdxl_adm(&pooled, &size).unwrap();
        assert_eq!(y.dims(), shape);
        let d = max_abs_diff(&y, want);
        assert!(d <= 2.4e-7, "{key}: max diff {d}");
    }
    // Batch of two pooled rows (the golden's own rows): the size part is repeated per row.
    let (shape, want) = get(&g, "adm/batch2_square_1024");
    assert_eq!(shape, &[2, 2816]);
    let rows: Vec<f32> = (0..2)
        .flat_map(|r| want[r * 2816..r * 2816 + 1280].to_vec())
        .collect();
    let p2 = Tensor::from_vec(rows, (2, 1280), &Device::Cpu).unwrap();
    let y = sdxl_adm(&p2, &SdxlSize::from_latent(128, 128)).unwrap();
    let d = max_abs_diff(&y, want);
    assert!(d <= 2.4e-7, "batch2: max diff {d}");
    let latent = SdxlSize::from_latent(96, 128);
    assert_eq!(
        (latent.width, latent.height, latent.target_height),
        (768.0, 1024.0, 1024.0)
    );
    for c in json["refiner_cases"].as_array().unwrap() {
        let f = |k: &str| c[k].as_f64().unwrap();
        let key = c["key"].as_str().unwrap();
        let (shape, want) = get(&g, key);
        let y = sdxl_refiner_adm(
            &pooled,
            f("width"),
            f("height"),
            f("crop_w"),
            f("crop_h"),
            f("aesthetic_score_used"),
        )
        .unwrap();
        assert_eq!(y.dims(), shape);
        let d = max_abs_diff(&y, want);
        assert!(d <= 2.4e-7, "{key}: max diff {d}");
    }
}

fn tiny(arch: Arch, dir: &Path) -> (Checkpoint, ModelConfig) {
    let p = dir.join("tiny.safetensors");
    recipe::write_recipe_checkpoint(arch, true, 0, &p).unwrap();
    let ck = Checkpoint::open(&p).unwrap();
    let cfg = ck.detect().unwrap();
    (ck, cfg)
}

#[test]
fn tiny_sdxl_shapes_weights_and_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, cfg) = tiny(Arch::Sdxl, dir.path());
    let clip = ClipModel::load(&ck, &cfg, &Device::Cpu).unwrap();
    let plain = clip.tokenize("a cat on a mat");
    let (c, p) = clip.encode(&plain, None).unwrap();
    assert_eq!(c.dims(), &[1, 77, 128]);
    assert_eq!(p.dims(), &[1, 64]);
    // Weight 0 on "cat": its row becomes the empty prompt's row; other rows are unchanged.
    let weighted = clip.tokenize("a (cat:0) on a mat");
    let (cw, pw) = clip.encode(&weighted, None).unwrap();
    let (ce, _) = clip.encode(&clip.tokenize(""), None).unwrap();
    let row = |t: &Tensor, j: usize| -> Vec<f32> { t.i((0, j)).unwrap().to_vec1().unwrap() };
    assert_eq!(row(&cw, 2), row(&ce, 2));
    assert_eq!(row(&cw, 1), row(&c, 1));
    assert_eq!(row(&cw, 5), row(&c, 5));
    assert_ne!(row(&c, 2), row(&ce, 2));
    assert_eq!(pw.to_vec2::<f32>().unwrap(), p.to_vec2::<f32>().unwrap());
    // Weight 2: z_empty + (z - z_empty) * 2.
    let (c2, _) = clip
        .encode(&clip.tokenize("a (cat:2) on a mat"), None)
        .unwrap();
    let want: Vec<f32> = row(&c, 2)
        .iter()
        .zip(row(&ce, 2))
        .map(|(z, e)| (z - e) * 2.0 + e)
        .collect();
    let got = row(&c2, 2);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
    // Long prompt: two windows; pooled from window 0.
    let long = clip.tokenize(&"a cat on a mat, ".repeat(20));
    let (cl, pl) = clip.encode(&long, None).unwrap();
    assert_eq!(cl.dims(), &[1, 154, 128]);
    assert_eq!(pl.dims(), &[1, 64]);
    // Clip skip changes the conditioning.
    let (cs, _) = clip.encode(&plain, Some(-1)).unwrap();
    assert_ne!(row(&cs, 3), row(&c, 3));
}

#[test]
fn tiny_sd15_clip_skip_minus_one_is_default() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, cfg) = tiny(Arch::Sd15, dir.path());
    let clip = ClipModel::load(&ck, &cfg, &Device::Cpu).unwrap();
    let t = clip.tokenize("a photo of a dog");
    let (c, p) = clip.encode(&t, None).unwrap();
    assert_eq!(c.dims(), &[1, 77, 64]);
    assert_eq!(p.dims(), &[1, 64]);
    let (c1, _) = clip.encode(&t, Some(-1)).unwrap();
    assert_eq!(
        c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        c1.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let (c2, p2) = clip.encode(&t, Some(-2)).unwrap();
    assert_ne!(
        c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        c2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // Pooled always from the final layer.
    assert_eq!(p.to_vec2::<f32>().unwrap(), p2.to_vec2::<f32>().unwrap());
    // Pooled = final-LN state at the first end token (position 6 here).
    let row6: Vec<f32> = c.i((0, 6)).unwrap().to_vec1().unwrap();
    assert_eq!(p.i(0).unwrap().to_vec1::<f32>().unwrap(), row6);
}

/// Text-encoder-only recipe file (same tensor values as the full file) in `dir`.
fn te_only(arch: Arch, dir: &Path) -> Checkpoint {
    let p = dir.join("te.safetensors");
    let t = std::time::Instant::now();
    recipe::write_recipe_checkpoint_filtered(arch, false, 0, &p, |n| {
        n.starts_with("cond_stage_model.") || n.starts_with("conditioner.")
    })
    .unwrap();
    eprintln!(
        "{arch:?} text encoders written in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Checkpoint::open(&p).unwrap()
}

fn golden_te(arch: Arch, file: &str, cond_tol: f32, pooled_tol: f32) {
    let g = read_golden(&golden_dir().join("pipeline").join(file));
    let dir = tempfile::tempdir().unwrap();
    let ck = te_only(arch, dir.path());
    // Detection of the text encoders only (no UNet in this file): use the recipe's configs.
    let want_cfg = recipe::recipe_config(arch, false);
    let cfg = ModelConfig {
        family: if arch == Arch::Sd15 {
            Family::Sd1
        } else {
            Family::Sdxl
        },
        prediction: crate::checkpoint::Prediction::Eps,
        unet: want_cfg.unet.clone(),
        vae: None,
        text_encoders: want_cfg
            .text_encoders
            .iter()
            .map(|(t, _)| t.clone())
            .collect(),
        comfy_model: None,
    };
    let t = std::time::Instant::now();
    let clip = ClipModel::load(&ck, &cfg, &Device::Cpu).unwrap();
    eprintln!("loaded in {:.1}s", t.elapsed().as_secs_f64());
    for (name, text) in [
        ("pos", "a beautiful sunset over mountains, photorealistic"),
        ("neg", "blurry, low quality"),
        ("empty", ""),
    ] {
        let tokens = clip.tokenize(text);
        for (kind, key) in [(ClipKind::L, "tokens_l"), (ClipKind::G, "tokens_g")] {
            if let Some(w) = tokens.get(kind) {
                let (_, want) = get(&g, &format!("te/{name}/{key}"));
                let ids: Vec<f32> = w[0]
                    .iter()
                    .map(|t| match t.token {
                        Token::Id(i) => i as f32,
                        Token::Embedding(_) => -1.0,
                    })
                    .collect();
                assert_eq!(ids, want, "te/{name}/{key}");
            }
        }
        let t = std::time::Instant::now();
        let (cond, pooled) = clip.encode(&tokens, None).unwrap();
        let (cs, cw) = get(&g, &format!("te/{name}/cond"));
        let (ps, pw) = get(&g, &format!("te/{name}/pooled"));
        assert_eq!(cond.dims(), cs);
        assert_eq!(pooled.dims(), ps);
        let dc = max_abs_diff(&cond, cw);
        let dp = max_abs_diff(&pooled, pw);
        eprintln!(
            "{file} te/{name}: cond max abs diff {dc:.3e}, pooled {dp:.3e} ({:.1}s)",
            t.elapsed().as_secs_f64()
        );
        assert!(dc <= cond_tol, "te/{name}/cond: {dc}");
        assert!(dp <= pooled_tol, "te/{name}/pooled: {dp}");
    }
}

/// Runs always (~25 s in the dev profile: writes the 250 MB SD1.5 recipe text encoder to a
/// temp dir and encodes 3 prompts).
#[test]
fn te_sd15_golden() {
    golden_te(Arch::Sd15, "sd15_components.safetensors", 1e-4, 1e-4);
}

#[test]
#[ignore = "heavy: writes the SDXL recipe text encoders (1.6 GB) and runs them on 3 prompts (~4 min); cargo test -p comfy-diffusion --release -- --ignored te_"]
fn te_sdxl_golden() {
    golden_te(Arch::Sdxl, "sdxl_components.safetensors", 5e-4, 1e-4);
}

/// ComfyUI holds text-encoder weights in F16 by default (`text_encoder_dtype`) and runs them
/// in F32: an F32-stored file loaded with F16 storage gives exactly what the same weights
/// rounded to F16 give, and differs from F32 storage.
#[test]
fn storage_dtype_rounds_f32_files_like_comfyui() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, cfg) = tiny(Arch::Sd15, dir.path());
    // Every tensor widened to F32; the text encoder's perturbed off the F16 grid.
    let mut f32_tensors = std::collections::HashMap::new();
    let mut f16_tensors = std::collections::HashMap::new();
    for name in ck.names() {
        let mut t = ck.tensor(name, DType::F32, &Device::Cpu).unwrap();
        if name.starts_with("cond_stage_model.") {
            t = ((t * (1.0 + 3e-4)).unwrap() + 1e-5).unwrap();
        }
        f16_tensors.insert(name.to_string(), t.to_dtype(DType::F16).unwrap());
        f32_tensors.insert(name.to_string(), t);
    }
    let p32 = dir.path().join("f32.safetensors");
    let p16 = dir.path().join("f16.safetensors");
    candle_core::safetensors::save(&f32_tensors, &p32).unwrap();
    candle_core::safetensors::save(&f16_tensors, &p16).unwrap();
    let (ck32, ck16) = (Checkpoint::open(&p32).unwrap(), Checkpoint::open(&p16).unwrap());
    let encode = |ck: &Checkpoint, storage: Option<DType>| {
        let clip = ClipModel::load_with(ck, &cfg, &Device::Cpu, storage).unwrap();
        let (c, p) = clip.encode(&clip.tokenize("a (photo:1.2) of a dog"), None).unwrap();
        (c.flatten_all().unwrap().to_vec1::<f32>().unwrap(), p.flatten_all().unwrap().to_vec1::<f32>().unwrap())
    };
    let as_f16 = encode(&ck32, Some(DType::F16));
    assert_eq!(as_f16, encode(&ck16, None), "F16 storage must equal an F16 file");
    let as_f32 = encode(&ck32, Some(DType::F32));
    assert_eq!(as_f32, encode(&ck32, None));
    assert_ne!(as_f16.0, as_f32.0, "F16 storage must round the F32 file's weights");
}
