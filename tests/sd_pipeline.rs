//! End-to-end SD node tests: the default text-to-image graph run through the node execute
//! functions on tiny recipe checkpoints (SD1.5 and SDXL layouts, generated into a temp dir),
//! plus the loader's error cases.
//!
//! The full-size golden comparisons run through the server in `tests/full_size_e2e.rs`.

use comfy_diffusion::recipe::{write_recipe_checkpoint, Arch};
use comfy_graph::node::{NoProgress, PreviewMethod};
use comfy_graph::{CancelToken, ErrorCategory, ExecContext, Folders, Inputs, Node, NodeError, Outputs, Value};
use comfy_nodes::ops::Array;
use comfy_nodes::sd;
use comfy_nodes::types::Latent;
use serde_json::json;

fn run(node: &dyn Node, folders: &Folders, pairs: Vec<(&str, Value)>) -> Result<Outputs, NodeError> {
    let mut inputs = Inputs::new();
    for (k, v) in pairs {
        inputs.insert(k, v);
    }
    let cancel = CancelToken::new();
    let prompt = serde_json::Value::Null;
    let ctx = ExecContext {
        prompt_id: "p",
        node_id: "1",
        prompt: &prompt,
        extra_pnginfo: None,
        folders,
        cancel: &cancel,
        progress: &NoProgress,
        preview_method: PreviewMethod::None,
    };
    node.execute(&inputs, &ctx)
}

fn j(v: serde_json::Value) -> Value {
    Value::Json(v)
}

fn folders_with(arch: Arch, name: &str) -> (tempfile::TempDir, Folders) {
    let dir = tempfile::tempdir().unwrap();
    let folders = Folders::new(dir.path());
    folders.create_all().unwrap();
    write_recipe_checkpoint(arch, true, 0, &dir.path().join("models/checkpoints").join(name)).unwrap();
    (dir, folders)
}

/// CheckpointLoaderSimple → CLIPTextEncode ×2 → EmptyLatentImage → KSampler → VAEDecode.
fn txt2img(folders: &Folders, ckpt: &str, pos_node: &dyn Node, pos: Vec<(&str, Value)>, seed: u64) -> (Latent, Array) {
    let ck = run(&sd::loaders::checkpoint_loader_simple::CheckpointLoaderSimple, folders, vec![("ckpt_name", j(json!(ckpt)))]).unwrap();
    let (model, clip, vae) = (ck.values[0].clone(), ck.values[1].clone(), ck.values[2].clone());
    let mut pos = pos;
    pos.push(("clip", clip.clone()));
    let p = run(pos_node, folders, pos).unwrap();
    let n = run(
        &sd::conditioning::clip_text_encode::CLIPTextEncode,
        folders,
        vec![("text", j(json!("blurry, low quality"))), ("clip", clip)],
    )
    .unwrap();
    let e = run(
        &comfy_nodes::latent::empty::EmptyLatentImage,
        folders,
        vec![("width", j(json!(64))), ("height", j(json!(48))), ("batch_size", j(json!(1)))],
    )
    .unwrap();
    let s = run(
        &sd::sampling::ksampler::KSampler,
        folders,
        vec![
            ("model", model),
            ("seed", j(json!(seed))),
            ("steps", j(json!(3))),
            ("cfg", j(json!(7.0))),
            ("sampler_name", j(json!("euler"))),
            ("scheduler", j(json!("normal"))),
            ("positive", p.values[0].clone()),
            ("negative", n.values[0].clone()),
            ("latent_image", e.values[0].clone()),
            ("denoise", j(json!(1.0))),
        ],
    )
    .unwrap();
    let latent = s.values[0].downcast::<Latent>().unwrap().clone();
    let img = run(&sd::vae::decode::VAEDecode, folders, vec![("samples", s.values[0].clone()), ("vae", vae)]).unwrap();
    let img = sd::inputs::value_array(&img.values[0]).unwrap();
    (latent, img)
}

fn check_outputs(latent: &Latent, img: &Array) {
    assert_eq!(latent.samples.dims(), &[1, 4, 6, 8]);
    let l = Array::from_tensor(&latent.samples).unwrap();
    assert!(l.data.iter().all(|v| v.is_finite()));
    assert!(l.data.iter().any(|v| *v != 0.0));
    assert_eq!(img.shape, vec![1, 48, 64, 3]);
    assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)));
    let mean = img.data.iter().sum::<f32>() / img.data.len() as f32;
    assert!(mean > 0.0 && mean < 1.0);
}

#[test]
fn tiny_sd15_txt2img_through_the_nodes() {
    let (_dir, folders) = folders_with(Arch::Sd15, "tiny_sd15.safetensors");
    let pos = vec![("text", j(json!("a beautiful sunset over mountains, photorealistic")))];
    let (l1, i1) = txt2img(&folders, "tiny_sd15.safetensors", &sd::conditioning::clip_text_encode::CLIPTextEncode, pos.clone(), 42);
    check_outputs(&l1, &i1);
    // Same seed → identical bits; the checkpoint stays resident (loaded once).
    let (l2, _) = txt2img(&folders, "tiny_sd15.safetensors", &sd::conditioning::clip_text_encode::CLIPTextEncode, pos.clone(), 42);
    assert_eq!(Array::from_tensor(&l1.samples).unwrap(), Array::from_tensor(&l2.samples).unwrap());
    let resident = sd::resident_models().into_iter().filter(|m| m.name == "tiny_sd15.safetensors").count();
    assert_eq!(resident, 1);
    let (l3, _) = txt2img(&folders, "tiny_sd15.safetensors", &sd::conditioning::clip_text_encode::CLIPTextEncode, pos, 43);
    assert_ne!(Array::from_tensor(&l1.samples).unwrap(), Array::from_tensor(&l3.samples).unwrap());
}

#[test]
fn tiny_sdxl_txt2img_through_the_nodes() {
    let (_dir, folders) = folders_with(Arch::Sdxl, "tiny_sdxl.safetensors");
    let pos = vec![("text", j(json!("a red fox in the snow")))];
    let (l, i) = txt2img(&folders, "tiny_sdxl.safetensors", &sd::conditioning::clip_text_encode::CLIPTextEncode, pos, 7);
    check_outputs(&l, &i);
    let sdxl = vec![
        ("width", j(json!(1024))),
        ("height", j(json!(1024))),
        ("crop_w", j(json!(0))),
        ("crop_h", j(json!(0))),
        ("target_width", j(json!(1024))),
        ("target_height", j(json!(1024))),
        ("text_g", j(json!("a red fox in the snow"))),
        ("text_l", j(json!("a red fox"))),
    ];
    let (l2, i2) = txt2img(&folders, "tiny_sdxl.safetensors", &sd::conditioning::clip_text_encode_sdxl::CLIPTextEncodeSDXL, sdxl, 7);
    check_outputs(&l2, &i2);
    assert_ne!(Array::from_tensor(&l.samples).unwrap(), Array::from_tensor(&l2.samples).unwrap());
}

#[test]
fn vae_encode_decode_roundtrip_shapes() {
    let (_dir, folders) = folders_with(Arch::Sd15, "tiny_vae_rt.safetensors");
    let ck = run(&sd::loaders::checkpoint_loader_simple::CheckpointLoaderSimple, &folders, vec![("ckpt_name", j(json!("tiny_vae_rt.safetensors")))]).unwrap();
    let vae = ck.values[2].clone();
    // A 2x35x42 image: cropped to 32x40 (centred) before encoding.
    let data: Vec<f32> = (0..2 * 35 * 42 * 3).map(|i| (i % 17) as f32 / 16.0).collect();
    let img = Value::object(Array::new(vec![2, 35, 42, 3], data).into_tensor().unwrap());
    let z = run(&sd::vae::encode::VAEEncode, &folders, vec![("pixels", img.clone()), ("vae", vae.clone())]).unwrap();
    let zl = z.values[0].downcast::<Latent>().unwrap();
    assert_eq!(zl.samples.dims(), &[2, 4, 4, 5]);
    let mask = Value::object(Array::full(vec![1, 35, 42], 0.0).into_tensor().unwrap());
    let zi = run(
        &sd::vae::encode_for_inpaint::VAEEncodeForInpaint,
        &folders,
        vec![("pixels", img.clone()), ("vae", vae.clone()), ("mask", mask), ("grow_mask_by", j(json!(6)))],
    )
    .unwrap();
    let zil = zi.values[0].downcast::<Latent>().unwrap();
    assert_eq!(zil.samples.dims(), &[2, 4, 4, 5]);
    assert_eq!(zil.noise_mask.as_ref().unwrap().dims(), &[1, 1, 32, 40]);
    let tiled = run(
        &sd::vae::decode_tiled::VAEDecodeTiled,
        &folders,
        vec![
            ("samples", z.values[0].clone()),
            ("vae", vae.clone()),
            ("tile_size", j(json!(64))),
            ("overlap", j(json!(32))),
            ("temporal_size", j(json!(64))),
            ("temporal_overlap", j(json!(8))),
        ],
    )
    .unwrap();
    assert_eq!(sd::inputs::value_array(&tiled.values[0]).unwrap().shape, vec![2, 32, 40, 3]);
    let px = run(&sd::loaders::vae_loader::VAELoader, &folders, vec![("vae_name", j(json!("pixel_space")))]).unwrap();
    let zp = run(&sd::vae::encode::VAEEncode, &folders, vec![("pixels", img), ("vae", px.values[0].clone())]).unwrap();
    assert_eq!(zp.values[0].downcast::<Latent>().unwrap().samples.dims(), &[2, 3, 35, 42]);
}

#[test]
fn loader_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let folders = Folders::new(dir.path());
    folders.create_all().unwrap();
    let ck = dir.path().join("models/checkpoints");
    std::fs::write(ck.join("broken.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let node = sd::loaders::checkpoint_loader_simple::CheckpointLoaderSimple;
    let e = run(&node, &folders, vec![("ckpt_name", j(json!("broken.safetensors")))]).err().unwrap();
    assert!(e.to_string().contains("broken.safetensors"), "{e}");
    let e = run(&node, &folders, vec![("ckpt_name", j(json!("gone.safetensors")))]).err().unwrap();
    assert_eq!(e.category(), ErrorCategory::MissingModel);
    // A file that is valid safetensors but no checkpoint: "Could not detect model type".
    write_recipe_checkpoint(Arch::Sd15, true, 0, &ck.join("full.safetensors")).unwrap();
    comfy_diffusion::recipe::write_recipe_checkpoint_filtered(Arch::Sd15, true, 0, &ck.join("vae_only.safetensors"), |n| n.starts_with("first_stage_model."))
        .unwrap();
    let e = run(&node, &folders, vec![("ckpt_name", j(json!("vae_only.safetensors")))]).err().unwrap();
    assert!(e.to_string().contains("Could not detect model type"), "{e}");
    assert!(e.to_string().contains("vae_only.safetensors"), "{e}");
}
