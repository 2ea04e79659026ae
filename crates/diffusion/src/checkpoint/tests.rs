use super::*;
use crate::recipe::{self, Arch};
use std::io::Write;

/// Writes a safetensors file from `(name, dtype, shape, data)` entries.
pub(crate) fn write_st(path: &Path, entries: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = String::from("{");
    let mut off = 0;
    for (k, (name, dt, shape, data)) in entries.iter().enumerate() {
        if k > 0 {
            header.push(',');
        }
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dt}\",\"shape\":[{}],\"data_offsets\":[{off},{}]}}",
            shape.join(","),
            off + data.len()
        ));
        off += data.len();
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut f = File::create(path).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    for (_, _, _, d) in entries {
        f.write_all(d).unwrap();
    }
}

/// A file with the full-size recipe header and a sparse (all-zero, no disk) data section:
/// enough for detection, which reads only the header.
fn sparse_full(arch: Arch, path: &Path) {
    let specs = recipe::recipe_tensors(arch, false);
    let header = recipe::header_bytes(&specs);
    let data: usize = specs.iter().map(|t| t.numel() * t.dtype.size()).sum();
    let mut f = File::create(path).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    f.set_len((8 + header.len() + data) as u64).unwrap();
}

fn err_msg(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn detects_full_size_sd15_and_sdxl() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, name) in [(Arch::Sd15, "SD15"), (Arch::Sdxl, "SDXL")] {
        let p = dir.path().join(format!("{name}.safetensors"));
        sparse_full(arch, &p);
        let ck = Checkpoint::open(&p).unwrap();
        let cfg = ck.detect().unwrap();
        let want = recipe::recipe_config(arch, false);
        assert_eq!(cfg.comfy_model, Some(name));
        assert_eq!(cfg.prediction, Prediction::Eps);
        assert_eq!(cfg.unet, want.unet);
        assert_eq!(cfg.vae.as_ref(), Some(&want.vae));
        let tes: Vec<TextEncoderConfig> =
            want.text_encoders.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(cfg.text_encoders, tes);
        match arch {
            Arch::Sd15 => assert_eq!(cfg.family, Family::Sd1),
            Arch::Sdxl => assert_eq!(cfg.family, Family::Sdxl),
        }
        assert_eq!(
            cfg.unet.heads_for(640),
            if arch == Arch::Sd15 {
                Some((8, 80))
            } else {
                Some((10, 64))
            }
        );
    }
}

#[test]
fn detects_tiny_recipes_and_loads_tensors() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, fam) in [(Arch::Sd15, Family::Sd1), (Arch::Sdxl, Family::Sdxl)] {
        let p = dir.path().join("tiny.safetensors");
        recipe::write_recipe_checkpoint(arch, true, 0, &p).unwrap();
        let ck = Arc::new(Checkpoint::open(&p).unwrap());
        let cfg = ck.detect().unwrap();
        let want = recipe::recipe_config(arch, true);
        assert_eq!(cfg.family, fam);
        assert_eq!(cfg.comfy_model, None);
        assert_eq!(cfg.unet, want.unet);
        assert_eq!(cfg.vae.as_ref(), Some(&want.vae));
        let (vae, prefix) = ck.detect_vae().unwrap();
        assert_eq!((vae, prefix.as_str()), (want.vae.clone(), VAE_PREFIX));
        // Tensor values: the generator's f16 bits widened to f32.
        let name = "model.diffusion_model.out.2.weight";
        let t = ck.tensor(name, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[4, 32, 3, 3]);
        let spec = recipe::recipe_tensors(arch, true)
            .into_iter()
            .find(|s| s.name == name)
            .unwrap();
        let mut b = Vec::new();
        recipe::tensor_bytes(&spec, 0, 0, 3, &mut b);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..3 {
            let h = half::f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]));
            assert_eq!(v[i], h.to_f32());
        }
        // VarBuilder over the UNet prefix.
        let vb = ck.var_builder(UNET_PREFIX, DType::F32, &Device::Cpu);
        let w = vb.pp("out").pp("2").get((4, 32, 3, 3), "weight").unwrap();
        assert_eq!(w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), v);
        let e = vb
            .pp("out")
            .pp("2")
            .get((4, 32, 3, 4), "weight")
            .unwrap_err()
            .to_string();
        assert!(e.contains("out.2.weight"), "{e}");
        assert!(vb.contains_tensor("time_embed.0.weight"));
        assert!(!vb.contains_tensor("nope"));
    }
}

#[test]
fn loads_f16_bf16_f32_and_vae_only_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mixed.safetensors");
    let vals = [1.5f32, -2.25, 0.125];
    let f16: Vec<u8> = vals
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = vals
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(
        &p,
        &[
            ("a", "F16", vec![3], f16),
            ("b", "BF16", vec![1, 3], bf16),
            ("c", "F32", vec![3, 1], f32b),
        ],
    );
    let ck = Checkpoint::open(&p).unwrap();
    for n in ["a", "b", "c"] {
        let t = ck.tensor(n, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vals);
        let t16 = ck.tensor(n, DType::F16, &Device::Cpu).unwrap();
        assert_eq!(t16.dtype(), DType::F16);
    }
    // A VAE-only file: the recipe's VAE tensors without prefix.
    let full = dir.path().join("tiny.safetensors");
    recipe::write_recipe_checkpoint_filtered(Arch::Sd15, true, 0, &full, |n| {
        n.starts_with(VAE_PREFIX)
    })
    .unwrap();
    let src = Checkpoint::open(&full).unwrap();
    let owned: Vec<(String, String, Vec<usize>, Vec<u8>)> = src
        .names()
        .map(|n| {
            let (info, bytes) = src.raw(n).unwrap();
            (
                n[VAE_PREFIX.len()..].to_string(),
                format!("{:?}", info.dtype).to_uppercase(),
                info.shape.clone(),
                bytes.to_vec(),
            )
        })
        .collect();
    let entries: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), d.as_str(), s.clone(), b.clone()))
        .collect();
    let vae_only = dir.path().join("vae.safetensors");
    write_st(&vae_only, &entries);
    let ck = Checkpoint::open(&vae_only).unwrap();
    let (cfg, prefix) = ck.detect_vae().unwrap();
    assert_eq!(prefix, "");
    assert_eq!(cfg, recipe::recipe_config(Arch::Sd15, true).vae);
    let e = err_msg(ck.detect());
    assert!(
        e.contains("vae.safetensors") && e.contains("VAE-only") && e.contains("a VAE under \"\""),
        "{e}"
    );
}

#[test]
fn bad_file_empty() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.safetensors");
    File::create(&p).unwrap();
    let e = err_msg(Checkpoint::open(&p));
    assert!(
        e.contains("empty.safetensors") && e.contains("empty file"),
        "{e}"
    );
}

#[test]
fn bad_file_pickle_ckpt() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("zip.ckpt", b"PK\x03\x04\x14\x00\x00\x00".to_vec()),
        (
            "old.pt",
            vec![0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9],
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let e = err_msg(Checkpoint::open(&p));
        assert!(
            e.contains(name) && e.contains("pickle") && e.contains("safetensors"),
            "{e}"
        );
    }
}

#[test]
fn bad_file_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.safetensors");
    recipe::write_recipe_checkpoint(Arch::Sd15, true, 0, &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    // Cut inside the data section.
    let q = dir.path().join("cut.safetensors");
    std::fs::write(&q, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_msg(Checkpoint::open(&q));
    assert!(
        e.contains("cut.safetensors") && e.contains("truncated") && e.contains("tensor"),
        "{e}"
    );
    // Cut inside the header.
    std::fs::write(&q, &bytes[..1000]).unwrap();
    let e = err_msg(Checkpoint::open(&q));
    assert!(e.contains("truncated") && e.contains("header"), "{e}");
    // Shorter than the length field.
    std::fs::write(&q, &bytes[..5]).unwrap();
    let e = err_msg(Checkpoint::open(&q));
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn bad_file_corrupt_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("corrupt.safetensors");
    let junk = b"{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_off";
    let mut b = (junk.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(junk);
    b.extend_from_slice(&[0; 4]);
    std::fs::write(&p, &b).unwrap();
    let e = err_msg(Checkpoint::open(&p));
    assert!(
        e.contains("corrupt.safetensors") && e.contains("corrupt safetensors header"),
        "{e}"
    );
    // Random bytes: header length absurd.
    std::fs::write(&p, [0xffu8; 64]).unwrap();
    let e = err_msg(Checkpoint::open(&p));
    assert!(e.contains("not a safetensors file"), "{e}");
    // Offsets disagreeing with the shape.
    write_st(&p, &[("x", "F16", vec![3], vec![0; 4])]);
    let e = err_msg(Checkpoint::open(&p));
    assert!(e.contains("data_offsets") && e.contains("\"x\""), "{e}");
}

#[test]
fn bad_file_flux_and_sd3() {
    let dir = tempfile::tempdir().unwrap();
    let z = || vec![0u8; 8];
    let flux = dir.path().join("flux1-dev.safetensors");
    write_st(
        &flux,
        &[
            (
                "model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
                "BF16",
                vec![2, 2],
                z(),
            ),
            (
                "model.diffusion_model.img_in.weight",
                "BF16",
                vec![2, 2],
                z(),
            ),
        ],
    );
    let e = err_msg(Checkpoint::open(&flux).unwrap().detect());
    assert!(
        e.contains("flux1-dev.safetensors") && e.contains("Flux") && e.contains("not a supported"),
        "{e}"
    );
    let sd3 = dir.path().join("sd3_medium.safetensors");
    write_st(
        &sd3,
        &[(
            "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight",
            "F16",
            vec![2, 2],
            z(),
        )],
    );
    let e = err_msg(Checkpoint::open(&sd3).unwrap().detect());
    assert!(
        e.contains("sd3_medium.safetensors") && e.contains("SD3"),
        "{e}"
    );
}

#[test]
fn missing_file_names_path() {
    let e = err_msg(Checkpoint::open("/nonexistent/dir/model.safetensors"));
    assert!(
        e.contains("/nonexistent/dir/model.safetensors") && e.contains("cannot open"),
        "{e}"
    );
}

/// Writes `specs` with the recipe generator's values (seed 0), replacing the data of the
/// tensors for which `override_data` returns bytes.
fn write_specs(
    path: &Path,
    specs: &[crate::recipe::layout::TensorSpec],
    override_data: impl Fn(&str) -> Option<Vec<u8>>,
) {
    let owned: Vec<(String, &str, Vec<usize>, Vec<u8>)> = specs
        .iter()
        .map(|s| {
            let data = override_data(&s.name).unwrap_or_else(|| {
                let mut b = Vec::new();
                recipe::tensor_bytes(s, 0, 0, s.numel(), &mut b);
                b
            });
            (s.name.clone(), s.dtype.name(), s.shape.clone(), data)
        })
        .collect();
    let entries: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_st(path, &entries);
}

fn tiny_openclip(prefix: &str, kind: ClipKind) -> TextEncoderConfig {
    TextEncoderConfig {
        kind,
        layout: ClipLayout::OpenClip,
        prefix: prefix.into(),
        vocab_size: 49408,
        max_positions: 77,
        hidden: 64,
        intermediate: 256,
        layers: 2,
        heads: 1,
        activation: Activation::Gelu,
        projection_dim: Some(64),
    }
}

#[test]
fn detects_sd2_eps_and_v_and_sdxl_refiner() {
    use crate::recipe::layout;
    let dir = tempfile::tempdir().unwrap();
    let unet = UnetConfig {
        in_channels: 4,
        out_channels: 4,
        model_channels: 64,
        channel_mult: vec![1, 1, 1, 1],
        num_res_blocks: vec![2; 4],
        transformer_depth: vec![1, 1, 1, 1, 1, 1, 0, 0],
        transformer_depth_output: vec![0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        transformer_depth_middle: Some(1),
        context_dim: 64,
        use_linear_in_transformer: true,
        heads: HeadSpec::Dim(64),
        adm_in_channels: None,
    };
    let te = tiny_openclip("cond_stage_model.model.", ClipKind::H);
    let mut specs = layout::unet_tensors(&unet, UNET_PREFIX);
    specs.extend(layout::text_encoder_tensors(&te, false));
    let p = dir.path().join("sd2.safetensors");
    write_specs(&p, &specs, |_| None);
    let ck = Checkpoint::open(&p).unwrap();
    let cfg = ck.detect().unwrap();
    assert_eq!(
        (cfg.family, cfg.prediction, cfg.comfy_model),
        (Family::Sd2, Prediction::Eps, None)
    );
    assert_eq!(cfg.unet, unet);
    assert_eq!(cfg.text_encoders, vec![te.clone()]);
    assert_eq!(cfg.vae, None);
    // Population std of output_blocks.11.1.transformer_blocks.0.norm1.bias > 0.09 → v-prediction.
    let vname = format!("{UNET_PREFIX}output_blocks.11.1.transformer_blocks.0.norm1.bias");
    let big: Vec<u8> = (0..64)
        .flat_map(|i| half::f16::from_f32(if i % 2 == 0 { 0.2 } else { -0.2 }).to_le_bytes())
        .collect();
    let q = dir.path().join("sd2v.safetensors");
    write_specs(&q, &specs, |n| (n == vname).then(|| big.clone()));
    let cfg = Checkpoint::open(&q).unwrap().detect().unwrap();
    assert_eq!((cfg.family, cfg.prediction), (Family::Sd2, Prediction::V));
    // CLIP-H encodes (penultimate layer + final LN, projected pooled).
    let clip = crate::clip::ClipModel::load(&ck, &ck.detect().unwrap(), &Device::Cpu).unwrap();
    let (c, pooled) = clip.encode(&clip.tokenize("a cat"), None).unwrap();
    assert_eq!((c.dims(), pooled.dims()), (&[1, 77, 64][..], &[1, 64][..]));

    // SDXL refiner layout: ADM, only an OpenCLIP-G under conditioner.embedders.0.model.
    let unet = UnetConfig {
        model_channels: 64,
        channel_mult: vec![1, 1],
        num_res_blocks: vec![1, 1],
        transformer_depth: vec![0, 1],
        transformer_depth_output: vec![1, 1, 0, 0],
        adm_in_channels: Some(64 + 5 * 256),
        ..unet
    };
    let te = tiny_openclip("conditioner.embedders.0.model.", ClipKind::G);
    let mut specs = layout::unet_tensors(&unet, UNET_PREFIX);
    specs.extend(layout::text_encoder_tensors(&te, false));
    let r = dir.path().join("refiner.safetensors");
    write_specs(&r, &specs, |_| None);
    let ck = Checkpoint::open(&r).unwrap();
    let cfg = ck.detect().unwrap();
    assert_eq!(
        (cfg.family, cfg.prediction),
        (Family::SdxlRefiner, Prediction::Eps)
    );
    assert_eq!(cfg.unet, unet);
    assert_eq!(cfg.text_encoders, vec![te]);
    let clip = crate::clip::ClipModel::load(&ck, &cfg, &Device::Cpu).unwrap();
    let (c, pooled) = clip.encode(&clip.tokenize("a cat"), None).unwrap();
    assert_eq!((c.dims(), pooled.dims()), (&[1, 77, 64][..], &[1, 64][..]));
}

#[test]
fn unet_without_cross_attention_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("odd.safetensors");
    let z = |n: usize| vec![0u8; n * 2];
    write_st(
        &p,
        &[
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                "F16",
                vec![32, 4, 3, 3],
                z(32 * 36),
            ),
            (
                "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
                "F16",
                vec![32],
                z(32),
            ),
            (
                "model.diffusion_model.input_blocks.1.0.out_layers.3.weight",
                "F16",
                vec![32, 32, 3, 3],
                z(32 * 288),
            ),
            (
                "model.diffusion_model.middle_block.0.in_layers.0.weight",
                "F16",
                vec![32],
                z(32),
            ),
            (
                "model.diffusion_model.output_blocks.0.0.in_layers.0.weight",
                "F16",
                vec![64],
                z(64),
            ),
            (
                "model.diffusion_model.output_blocks.1.0.in_layers.0.weight",
                "F16",
                vec![64],
                z(64),
            ),
        ],
    );
    let e = err_msg(Checkpoint::open(&p).unwrap().detect());
    assert!(
        e.contains("odd.safetensors") && e.contains("no cross-attention") && e.contains("LDM UNet"),
        "{e}"
    );
}

/// ComfyUI's diffusers → LDM VAE key conversion (checkpoints.md §4.2), for 4 levels.
fn diffusers_to_ldm(k: &str) -> String {
    let mut k = k
        .replace("conv_shortcut", "nin_shortcut")
        .replace("conv_norm_out", "norm_out");
    k = k.replace("mid_block.attentions.0.", "mid.attn_1.");
    for i in 0..4 {
        for j in 0..2 {
            k = k.replace(
                &format!("encoder.down_blocks.{i}.resnets.{j}."),
                &format!("encoder.down.{i}.block.{j}."),
            );
        }
    }
    for i in 0..3 {
        k = k.replace(
            &format!("down_blocks.{i}.downsamplers.0."),
            &format!("down.{i}.downsample."),
        );
        k = k.replace(
            &format!("up_blocks.{i}.upsamplers.0."),
            &format!("up.{}.upsample.", 3 - i),
        );
    }
    for i in 0..4 {
        for j in 0..3 {
            k = k.replace(
                &format!("decoder.up_blocks.{i}.resnets.{j}."),
                &format!("decoder.up.{}.block.{j}.", 3 - i),
            );
        }
    }
    for i in 0..2 {
        k = k.replace(
            &format!("mid_block.resnets.{i}."),
            &format!("mid.block_{}.", i + 1),
        );
    }
    if k.contains("mid.attn_1.") {
        for (a, b) in [
            ("group_norm.", "norm."),
            ("to_q.", "q."),
            ("to_k.", "k."),
            ("to_v.", "v."),
            ("to_out.0.", "proj_out."),
        ] {
            k = k.replace(a, b);
        }
    }
    k
}

#[test]
fn loads_diffusers_format_vae() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("tiny.safetensors");
    recipe::write_recipe_checkpoint_filtered(Arch::Sdxl, true, 0, &full, |n| {
        n.starts_with(VAE_PREFIX)
    })
    .unwrap();
    let src = Arc::new(Checkpoint::open(&full).unwrap());
    let want_cfg = recipe::recipe_config(Arch::Sdxl, true).vae;
    // Write the same tensors under diffusers names, attention as linear [C, C].
    let ldm_names: Vec<String> = src
        .names()
        .map(|n| n[VAE_PREFIX.len()..].to_string())
        .collect();
    let mut owned = Vec::new();
    for ldm in &ldm_names {
        let diff = vae_keys::diffusers_key(&src, "", want_cfg.ch_mult.len(), ldm);
        assert_eq!(diffusers_to_ldm(&diff), *ldm, "{diff}");
        let (info, bytes) = src.raw(&format!("{VAE_PREFIX}{ldm}")).unwrap();
        let mut shape = info.shape.clone();
        if ldm.contains("mid.attn_1.") && shape.len() == 4 {
            shape.truncate(2);
        }
        owned.push((diff, shape, bytes.to_vec()));
    }
    assert!(owned
        .iter()
        .any(|(n, _, _)| n == "decoder.up_blocks.2.resnets.0.conv_shortcut.weight"));
    assert!(owned
        .iter()
        .any(|(n, _, _)| n == "encoder.mid_block.attentions.0.to_out.0.weight"));
    let entries: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = owned
        .iter()
        .map(|(n, s, b)| (n.as_str(), "F16", s.clone(), b.clone()))
        .collect();
    let p = dir.path().join("diffusion_pytorch_model.safetensors");
    write_st(&p, &entries);
    let ck = Arc::new(Checkpoint::open(&p).unwrap());
    let (cfg, vb) = ck.vae_var_builder(DType::F32, &Device::Cpu).unwrap();
    assert_eq!(cfg, want_cfg);
    let src_vb = src.var_builder(VAE_PREFIX, DType::F32, &Device::Cpu);
    for ldm in &ldm_names {
        let shape = src.shape(&format!("{VAE_PREFIX}{ldm}")).unwrap().to_vec();
        let a = vb.get(shape.clone(), ldm).unwrap();
        let b = src_vb.get(shape, ldm).unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{ldm}"
        );
    }
}
