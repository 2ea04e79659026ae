use super::*;
use crate::checkpoint::tests::write_st;
use crate::recipe::{self, Arch};

fn tiny(arch: Arch, dir: &std::path::Path) -> Arc<Checkpoint> {
    let p = dir.join(format!("{arch:?}.safetensors"));
    recipe::write_recipe_checkpoint(arch, true, 0, &p).unwrap();
    Arc::new(Checkpoint::open(&p).unwrap())
}

fn rand(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| recipe::uniform(seed, i as u64) as f32 * scale)
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn whole(k: &str) -> Target {
    Target::whole(k.to_string())
}

#[test]
fn unet_key_map_knows_ldm_diffusers_and_peft_names() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(Arch::Sd15, dir.path());
    let cfg = ck.detect().unwrap();
    let mut map = KeyMap::new();
    unet_key_map(&ck, crate::checkpoint::UNET_PREFIX, &cfg.unet, &mut map);
    let u = |k: &str| whole(&format!("model.diffusion_model.{k}.weight"));
    let cases = [
        (
            "lora_unet_input_blocks_1_1_proj_in",
            u("input_blocks.1.1.proj_in"),
        ),
        (
            "diffusion_model.input_blocks.1.1.proj_in",
            u("input_blocks.1.1.proj_in"),
        ),
        (
            "lora_unet_down_blocks_0_attentions_0_proj_in",
            u("input_blocks.1.1.proj_in"),
        ),
        (
            "lora_unet_down_blocks_0_resnets_0_conv1",
            u("input_blocks.1.0.in_layers.2"),
        ),
        (
            "lora_unet_down_blocks_1_resnets_0_time_emb_proj",
            u("input_blocks.3.0.emb_layers.1"),
        ),
        (
            "lora_unet_down_blocks_0_downsamplers_0_conv",
            u("input_blocks.2.0.op"),
        ),
        (
            "lora_unet_mid_block_attentions_0_proj_out",
            u("middle_block.1.proj_out"),
        ),
        (
            "lora_unet_mid_block_resnets_1_conv2",
            u("middle_block.2.out_layers.3"),
        ),
        (
            "lora_unet_up_blocks_0_resnets_1_conv1",
            u("output_blocks.1.0.in_layers.2"),
        ),
        (
            "lora_unet_up_blocks_0_upsamplers_0_conv",
            u("output_blocks.1.1.conv"),
        ),
        (
            "lora_unet_up_blocks_1_upsamplers_0_conv",
            u("output_blocks.3.2.conv"),
        ),
        (
            "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
            u("output_blocks.2.1.transformer_blocks.0.attn1.to_q"),
        ),
        (
            "lycoris_up_blocks_2_attentions_1_transformer_blocks_0_ff_net_0_proj",
            u("output_blocks.5.1.transformer_blocks.0.ff.net.0.proj"),
        ),
        (
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out",
            u("input_blocks.1.1.transformer_blocks.0.attn1.to_out.0"),
        ),
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k",
            u("input_blocks.3.1.transformer_blocks.0.attn2.to_k"),
        ),
        ("lora_unet_conv_in", u("input_blocks.0.0")),
        ("lora_unet_time_embedding_linear_2", u("time_embed.2")),
        ("lora_unet_conv_out", u("out.2")),
    ];
    for (name, want) in cases {
        assert_eq!(map.get(name), Some(&want), "{name}");
    }
    for t in map.values() {
        assert!(ck.contains(&t.key), "{} not in the file", t.key);
    }
}

#[test]
fn clip_key_map_covers_kohya_diffusers_and_openclip_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(Arch::Sdxl, dir.path());
    let cfg = ck.detect().unwrap();
    let mut map = KeyMap::new();
    clip_key_map(&ck, &cfg.text_encoders, &mut map);
    let l = "conditioner.embedders.0.transformer.text_model.encoder.layers.";
    let g = "conditioner.embedders.1.model.transformer.resblocks.";
    assert_eq!(
        map["lora_te1_text_model_encoder_layers_0_self_attn_q_proj"],
        whole(&format!("{l}0.self_attn.q_proj.weight"))
    );
    assert_eq!(
        map["lora_te_text_model_encoder_layers_2_mlp_fc2"],
        whole(&format!("{l}2.mlp.fc2.weight"))
    );
    assert_eq!(
        map["text_encoder.text_model.encoder.layers.1.self_attn.out_proj"],
        whole(&format!("{l}1.self_attn.out_proj.weight"))
    );
    let k = Target {
        file: 1,
        key: format!("{g}1.attn.in_proj_weight"),
        slice: Slice::Rows { start: 64, len: 64 },
    };
    assert_eq!(
        map["lora_te2_text_model_encoder_layers_1_self_attn_k_proj"],
        k
    );
    assert_eq!(
        map["text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj"],
        k
    );
    assert_eq!(
        map["text_encoders.clip_g.transformer.text_model.encoder.layers.1.self_attn.k_proj"],
        k
    );
    assert_eq!(
        map["lora_te2_text_model_encoder_layers_0_mlp_fc1"],
        Target {
            file: 1,
            ..whole(&format!("{g}0.mlp.c_fc.weight"))
        }
    );
    assert_eq!(
        map["lora_te2_text_projection"],
        Target {
            file: 1,
            key: "conditioner.embedders.1.model.text_projection".into(),
            slice: Slice::Transposed
        }
    );
    // SD1: CLIP-L answers to lora_te_ and lora_te1_, and there is no lora_te2_.
    let ck1 = tiny(Arch::Sd15, dir.path());
    let cfg1 = ck1.detect().unwrap();
    let mut map1 = KeyMap::new();
    clip_key_map(&ck1, &cfg1.text_encoders, &mut map1);
    let t = whole("cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight");
    assert_eq!(map1["lora_te_text_model_encoder_layers_0_mlp_fc1"], t);
    assert_eq!(map1["lora_te1_text_model_encoder_layers_0_mlp_fc1"], t);
    assert!(!map1.keys().any(|k| k.starts_with("lora_te2_")));
}

/// `W + strength · scale · up @ down` computed in f64 from the raw values.
fn expected(
    w: &[f32],
    up: &[f32],
    down: &[f32],
    rank: usize,
    strength: f64,
    scale: f64,
) -> Vec<f32> {
    let out = up.len() / rank;
    let cols = down.len() / rank;
    assert_eq!(w.len(), out * cols);
    let mut v = Vec::with_capacity(w.len());
    for o in 0..out {
        for c in 0..cols {
            let mut acc = 0f64;
            for r in 0..rank {
                acc += up[o * rank + r] as f64 * down[r * cols + c] as f64;
            }
            v.push((w[o * cols + c] as f64 + strength * scale * acc) as f32);
        }
    }
    v
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn patched_weights_follow_the_lora_formula_and_unknown_keys_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny(Arch::Sd15, dir.path());
    let cfg = ck.detect().unwrap();
    let u = crate::checkpoint::UNET_PREFIX;
    // A 1x1 conv (kohya names, alpha 2, rank 4), a linear (PEFT lora_A/lora_B, no alpha) and a
    // 3x3 conv (LoCon-style down kernel, alpha 1, rank 2), plus keys of nothing.
    let proj = (
        "lora_unet_down_blocks_0_attentions_0_proj_in",
        "input_blocks.1.1.proj_in.weight",
    );
    let tok = (
        "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    );
    let conv = (
        "lora_unet_input_blocks_1_0_in_layers_2",
        "input_blocks.1.0.in_layers.2.weight",
    );
    let shape = |k: &str| ck.shape(&format!("{u}{k}")).unwrap().to_vec();
    let (ps, ts, cs) = (shape(proj.1), shape(tok.1), shape(conv.1));
    assert_eq!(ps, vec![32, 32, 1, 1]);
    assert_eq!(cs, vec![32, 32, 3, 3]);
    let p_up = rand(1, 32 * 4, 0.5);
    let p_down = rand(2, 4 * 32, 0.5);
    let t_up = rand(3, ts[0] * 3, 0.5);
    let t_down = rand(4, 3 * ts[1], 0.5);
    let c_up = rand(5, 32 * 2, 0.5);
    let c_down = rand(6, 2 * 32 * 9, 0.5);
    let lora_path = dir.path().join("lora.safetensors");
    let e = |n: String, s: Vec<usize>, v: &[f32]| (n, s, f32_bytes(v));
    let entries = vec![
        e(
            format!("{}.lora_up.weight", proj.0),
            vec![32, 4, 1, 1],
            &p_up,
        ),
        e(
            format!("{}.lora_down.weight", proj.0),
            vec![4, 32, 1, 1],
            &p_down,
        ),
        e(format!("{}.alpha", proj.0), vec![], &[2.0]),
        e(format!("{}.lora_B.weight", tok.0), vec![ts[0], 3], &t_up),
        e(format!("{}.lora_A.weight", tok.0), vec![3, ts[1]], &t_down),
        e(
            format!("{}.lora_up.weight", conv.0),
            vec![32, 2, 1, 1],
            &c_up,
        ),
        e(
            format!("{}.lora_down.weight", conv.0),
            vec![2, 32, 3, 3],
            &c_down,
        ),
        e(format!("{}.alpha", conv.0), vec![], &[1.0]),
        e(
            "lora_unet_no_such_block.lora_up.weight".into(),
            vec![4, 1],
            &[0.0; 4],
        ),
        e(
            "lora_unet_no_such_block.lora_down.weight".into(),
            vec![1, 4],
            &[0.0; 4],
        ),
    ];
    let refs: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = entries
        .iter()
        .map(|(n, s, b)| (n.as_str(), "F32", s.clone(), b.clone()))
        .collect();
    write_st(&lora_path, &refs);
    let file = Checkpoint::open(&lora_path).unwrap();
    let mut map = KeyMap::new();
    unet_key_map(&ck, u, &cfg.unet, &mut map);
    let lora = load_lora(&file, &map).unwrap();
    assert_eq!(lora.patches.len(), 3);
    assert_eq!(
        lora.not_loaded,
        vec![
            "lora_unet_no_such_block.lora_down.weight".to_string(),
            "lora_unet_no_such_block.lora_up.weight".to_string()
        ]
    );

    let strength = 0.7;
    let mut set = PatchSet::new();
    assert_eq!(set.add(&lora, 0.0, |_| true), 0);
    assert!(set.is_empty());
    assert_eq!(set.add(&lora, strength, |_| true), 3);
    let vb = patched_var_builder(&ck, u, Arc::new(set), None, DType::F32, &Device::Cpu);
    let base = |k: &str| {
        ck.tensor(&format!("{u}{k}"), DType::F32, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let got = |k: &str, s: &[usize]| {
        vb.get(s, k)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_close(
        &got(proj.1, &ps),
        &expected(&base(proj.1), &p_up, &p_down, 4, strength, 0.5),
        "proj_in",
    );
    assert_close(
        &got(tok.1, &ts),
        &expected(&base(tok.1), &t_up, &t_down, 3, strength, 1.0),
        "to_k",
    );
    assert_close(
        &got(conv.1, &cs),
        &expected(&base(conv.1), &c_up, &c_down, 2, strength, 0.5),
        "conv 3x3",
    );
    // Unpatched weights are untouched, bit for bit.
    let other = "input_blocks.1.0.in_layers.0.weight";
    let s = shape(other);
    assert_eq!(got(other, &s), base(other));
    // The patch really changes the weight.
    assert_ne!(got(proj.1, &ps), base(proj.1));
}

#[test]
fn row_and_transposed_slices_patch_only_their_part() {
    let up = Tensor::from_vec(vec![1f32, 2.0], (2, 1), &Device::Cpu).unwrap();
    let down = Tensor::from_vec(vec![3f32, 4.0], (1, 2), &Device::Cpu).unwrap();
    let lw = Arc::new(LoraWeights {
        up,
        down,
        mid: None,
        alpha: None,
    });
    let w = Tensor::zeros((6, 2), DType::F32, &Device::Cpu).unwrap();
    let rows = Target {
        file: 0,
        key: "w".into(),
        slice: Slice::Rows { start: 2, len: 2 },
    };
    let lora = Lora {
        patches: vec![(rows, lw.clone())],
        not_loaded: vec![],
    };
    let mut set = PatchSet::new();
    set.add(&lora, 1.0, |_| true);
    let got = set
        .apply("w", &w)
        .unwrap()
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(
        got,
        vec![
            vec![0.0, 0.0],
            vec![0.0, 0.0],
            vec![3.0, 4.0],
            vec![6.0, 8.0],
            vec![0.0, 0.0],
            vec![0.0, 0.0]
        ]
    );
    assert!(set.apply("other", &w).unwrap().is_none());

    let t = Target {
        file: 0,
        key: "p".into(),
        slice: Slice::Transposed,
    };
    let lora = Lora {
        patches: vec![(t, lw)],
        not_loaded: vec![],
    };
    let mut set = PatchSet::new();
    set.add(&lora, -2.0, |_| true);
    let p = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let got = set
        .apply("p", &p)
        .unwrap()
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    // Transpose of -2 · [[3, 4], [6, 8]].
    assert_eq!(got, vec![vec![-6.0, -12.0], vec![-8.0, -16.0]]);
}

#[test]
fn fp8_rounding_is_nearest_even_with_pytorch_overflow() {
    // e4m3fn: 3 mantissa bits; 1.0625 is halfway between 1.0 and 1.125 → even (1.0).
    assert_eq!(round_fp8(1.0625, Fp8::E4M3Fn), 1.0);
    assert_eq!(round_fp8(1.1875, Fp8::E4M3Fn), 1.25);
    assert_eq!(round_fp8(-0.3, Fp8::E4M3Fn), -0.3125);
    assert_eq!(round_fp8(450.0, Fp8::E4M3Fn), 448.0);
    assert!(round_fp8(470.0, Fp8::E4M3Fn).is_nan());
    // Smallest subnormal 2^-9; half of it ties to 0.
    assert_eq!(round_fp8(2f32.powi(-9), Fp8::E4M3Fn), 2f32.powi(-9));
    assert_eq!(round_fp8(2f32.powi(-10), Fp8::E4M3Fn), 0.0);
    // e5m2: 2 mantissa bits.
    assert_eq!(round_fp8(1.125, Fp8::E5M2), 1.0);
    assert_eq!(round_fp8(1.375, Fp8::E5M2), 1.5);
    assert_eq!(round_fp8(60000.0, Fp8::E5M2), 57344.0);
    assert_eq!(round_fp8(-70000.0, Fp8::E5M2), f32::NEG_INFINITY);
    assert_eq!(round_fp8(2f32.powi(-16), Fp8::E5M2), 2f32.powi(-16));
}
