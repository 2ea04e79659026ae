//! Tensor names and shapes of a single-file checkpoint, derived from model configs.
//!
//! This is the inverse of architecture detection: given a [`UnetConfig`], [`VaeConfig`] and
//! [`TextEncoderConfig`]s it lists every tensor the LDM / Hugging Face / OpenCLIP modules own,
//! with the names ComfyUI's `save_checkpoint` writes. For the standard SD1.5 and SDXL configs it
//! reproduces `shared/spec/manifest_{sd15,sdxl}.json` exactly (checked by a test).

use crate::checkpoint::config::{ClipLayout, TextEncoderConfig, UnetConfig, VaeConfig};

/// Element type of a recipe tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecDtype {
    /// IEEE half.
    F16,
    /// Little-endian i64 (only CLIP-L `position_ids`).
    I64,
}

impl SpecDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SpecDtype::F16 => 2,
            SpecDtype::I64 => 8,
        }
    }

    /// safetensors dtype string.
    pub fn name(self) -> &'static str {
        match self {
            SpecDtype::F16 => "F16",
            SpecDtype::I64 => "I64",
        }
    }
}

/// One tensor of a checkpoint: full key, dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Full key (with the component prefix).
    pub name: String,
    /// Stored dtype.
    pub dtype: SpecDtype,
    /// Row-major shape (`[]` = scalar).
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Out<'a> {
    prefix: &'a str,
    v: Vec<TensorSpec>,
}

impl Out<'_> {
    fn t(&mut self, name: &str, shape: &[usize]) {
        self.v.push(TensorSpec {
            name: format!("{}{}", self.prefix, name),
            dtype: SpecDtype::F16,
            shape: shape.to_vec(),
        });
    }
    fn wb(&mut self, name: &str, shape: &[usize]) {
        self.t(&format!("{name}.weight"), shape);
        self.t(&format!("{name}.bias"), &shape[..1]);
    }
    fn norm(&mut self, name: &str, c: usize) {
        self.t(&format!("{name}.weight"), &[c]);
        self.t(&format!("{name}.bias"), &[c]);
    }
}

fn unet_res(o: &mut Out, p: &str, cin: usize, cout: usize, temb: usize) {
    o.norm(&format!("{p}.in_layers.0"), cin);
    o.wb(&format!("{p}.in_layers.2"), &[cout, cin, 3, 3]);
    o.wb(&format!("{p}.emb_layers.1"), &[cout, temb]);
    o.norm(&format!("{p}.out_layers.0"), cout);
    o.wb(&format!("{p}.out_layers.3"), &[cout, cout, 3, 3]);
    if cin != cout {
        o.wb(&format!("{p}.skip_connection"), &[cout, cin, 1, 1]);
    }
}

fn unet_transformer(o: &mut Out, p: &str, c: usize, depth: usize, cfg: &UnetConfig) {
    o.norm(&format!("{p}.norm"), c);
    let proj: &[usize] = if cfg.use_linear_in_transformer {
        &[c, c]
    } else {
        &[c, c, 1, 1]
    };
    o.wb(&format!("{p}.proj_in"), proj);
    o.wb(&format!("{p}.proj_out"), proj);
    let ctx = cfg.context_dim;
    for k in 0..depth {
        let b = format!("{p}.transformer_blocks.{k}");
        for (attn, kv) in [("attn1", c), ("attn2", ctx)] {
            o.t(&format!("{b}.{attn}.to_q.weight"), &[c, c]);
            o.t(&format!("{b}.{attn}.to_k.weight"), &[c, kv]);
            o.t(&format!("{b}.{attn}.to_v.weight"), &[c, kv]);
            o.wb(&format!("{b}.{attn}.to_out.0"), &[c, c]);
        }
        o.wb(&format!("{b}.ff.net.0.proj"), &[8 * c, c]);
        o.wb(&format!("{b}.ff.net.2"), &[c, 4 * c]);
        for n in ["norm1", "norm2", "norm3"] {
            o.norm(&format!("{b}.{n}"), c);
        }
    }
}

/// Every UNet tensor for `cfg`, keys prefixed with `prefix` (`model.diffusion_model.`).
pub fn unet_tensors(cfg: &UnetConfig, prefix: &str) -> Vec<TensorSpec> {
    let mut o = Out {
        prefix,
        v: Vec::new(),
    };
    let mc = cfg.model_channels;
    let temb = cfg.time_embed_dim();
    o.wb("time_embed.0", &[temb, mc]);
    o.wb("time_embed.2", &[temb, temb]);
    if let Some(adm) = cfg.adm_in_channels {
        o.wb("label_emb.0.0", &[temb, adm]);
        o.wb("label_emb.0.2", &[temb, temb]);
    }
    o.wb("input_blocks.0.0", &[mc, cfg.in_channels, 3, 3]);
    let mut chans = vec![mc];
    let mut ch = mc;
    let mut idx = 1;
    let mut k = 0;
    let levels = cfg.channel_mult.len();
    for (level, &mult) in cfg.channel_mult.iter().enumerate() {
        for _ in 0..cfg.num_res_blocks[level] {
            let p = format!("input_blocks.{idx}");
            unet_res(&mut o, &format!("{p}.0"), ch, mult * mc, temb);
            ch = mult * mc;
            let d = cfg.transformer_depth.get(k).copied().unwrap_or(0);
            if d > 0 {
                unet_transformer(&mut o, &format!("{p}.1"), ch, d, cfg);
            }
            chans.push(ch);
            idx += 1;
            k += 1;
        }
        if level + 1 != levels {
            o.wb(&format!("input_blocks.{idx}.0.op"), &[ch, ch, 3, 3]);
            chans.push(ch);
            idx += 1;
        }
    }
    unet_res(&mut o, "middle_block.0", ch, ch, temb);
    if let Some(d) = cfg.transformer_depth_middle {
        unet_transformer(&mut o, "middle_block.1", ch, d, cfg);
        unet_res(&mut o, "middle_block.2", ch, ch, temb);
    }
    let mut n = 0;
    for level in (0..levels).rev() {
        let mult = cfg.channel_mult[level];
        let nrb = cfg.num_res_blocks[level];
        for i in 0..=nrb {
            let ich = chans.pop().unwrap_or(mc);
            let p = format!("output_blocks.{n}");
            unet_res(&mut o, &format!("{p}.0"), ch + ich, mult * mc, temb);
            ch = mult * mc;
            let mut sub = 1;
            let d = cfg.transformer_depth_output.get(n).copied().unwrap_or(0);
            if d > 0 {
                unet_transformer(&mut o, &format!("{p}.1"), ch, d, cfg);
                sub = 2;
            }
            if level > 0 && i == nrb {
                o.wb(&format!("{p}.{sub}.conv"), &[ch, ch, 3, 3]);
            }
            n += 1;
        }
    }
    o.norm("out.0", ch);
    o.wb("out.2", &[cfg.out_channels, mc, 3, 3]);
    o.v
}

fn vae_res(o: &mut Out, p: &str, cin: usize, cout: usize) {
    o.norm(&format!("{p}.norm1"), cin);
    o.wb(&format!("{p}.conv1"), &[cout, cin, 3, 3]);
    o.norm(&format!("{p}.norm2"), cout);
    o.wb(&format!("{p}.conv2"), &[cout, cout, 3, 3]);
    if cin != cout {
        o.wb(&format!("{p}.nin_shortcut"), &[cout, cin, 1, 1]);
    }
}

fn vae_mid(o: &mut Out, p: &str, c: usize, attn: bool) {
    vae_res(o, &format!("{p}.mid.block_1"), c, c);
    if attn {
        o.norm(&format!("{p}.mid.attn_1.norm"), c);
        for n in ["q", "k", "v", "proj_out"] {
            o.wb(&format!("{p}.mid.attn_1.{n}"), &[c, c, 1, 1]);
        }
    }
    vae_res(o, &format!("{p}.mid.block_2"), c, c);
}

/// Every VAE tensor for `cfg`, keys prefixed with `prefix` (`first_stage_model.`).
pub fn vae_tensors(cfg: &VaeConfig, prefix: &str) -> Vec<TensorSpec> {
    let mut o = Out {
        prefix,
        v: Vec::new(),
    };
    let ch = cfg.ch;
    let levels = cfg.ch_mult.len();
    // Encoder.
    o.wb("encoder.conv_in", &[ch, cfg.in_channels, 3, 3]);
    let mut block_in = ch;
    for (i, &m) in cfg.ch_mult.iter().enumerate() {
        let block_out = ch * m;
        for j in 0..cfg.num_res_blocks {
            vae_res(
                &mut o,
                &format!("encoder.down.{i}.block.{j}"),
                block_in,
                block_out,
            );
            block_in = block_out;
        }
        if i + 1 != levels {
            o.wb(
                &format!("encoder.down.{i}.downsample.conv"),
                &[block_in, block_in, 3, 3],
            );
        }
    }
    vae_mid(&mut o, "encoder", block_in, cfg.mid_attention);
    o.norm("encoder.norm_out", block_in);
    o.wb("encoder.conv_out", &[2 * cfg.z_channels, block_in, 3, 3]);
    // Decoder.
    let mut block_in = ch * cfg.ch_mult[levels - 1];
    o.wb("decoder.conv_in", &[block_in, cfg.z_channels, 3, 3]);
    vae_mid(&mut o, "decoder", block_in, cfg.mid_attention);
    for i in (0..levels).rev() {
        let block_out = ch * cfg.ch_mult[i];
        for j in 0..=cfg.num_res_blocks {
            vae_res(
                &mut o,
                &format!("decoder.up.{i}.block.{j}"),
                block_in,
                block_out,
            );
            block_in = block_out;
        }
        if i != 0 {
            o.wb(
                &format!("decoder.up.{i}.upsample.conv"),
                &[block_in, block_in, 3, 3],
            );
        }
    }
    o.norm("decoder.norm_out", block_in);
    o.wb("decoder.conv_out", &[cfg.out_ch, block_in, 3, 3]);
    if cfg.has_quant_conv {
        o.wb("quant_conv", &[2 * cfg.embed_dim, 2 * cfg.z_channels, 1, 1]);
        o.wb("post_quant_conv", &[cfg.z_channels, cfg.embed_dim, 1, 1]);
    }
    o.v
}

/// Every tensor of one text encoder (its own prefix from `cfg.prefix`). `position_ids` adds the
/// I64 `embeddings.position_ids [1, positions]` some Hugging Face layout files carry.
pub fn text_encoder_tensors(cfg: &TextEncoderConfig, position_ids: bool) -> Vec<TensorSpec> {
    let mut o = Out {
        prefix: &cfg.prefix,
        v: Vec::new(),
    };
    let (d, i, v, p) = (
        cfg.hidden,
        cfg.intermediate,
        cfg.vocab_size,
        cfg.max_positions,
    );
    match cfg.layout {
        ClipLayout::HuggingFace => {
            o.t("embeddings.token_embedding.weight", &[v, d]);
            o.t("embeddings.position_embedding.weight", &[p, d]);
            if position_ids {
                o.v.push(TensorSpec {
                    name: format!("{}embeddings.position_ids", cfg.prefix),
                    dtype: SpecDtype::I64,
                    shape: vec![1, p],
                });
            }
            for l in 0..cfg.layers {
                let b = format!("encoder.layers.{l}");
                o.norm(&format!("{b}.layer_norm1"), d);
                o.norm(&format!("{b}.layer_norm2"), d);
                for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    o.wb(&format!("{b}.self_attn.{n}"), &[d, d]);
                }
                o.wb(&format!("{b}.mlp.fc1"), &[i, d]);
                o.wb(&format!("{b}.mlp.fc2"), &[d, i]);
            }
            o.norm("final_layer_norm", d);
        }
        ClipLayout::OpenClip => {
            o.t("token_embedding.weight", &[v, d]);
            o.t("positional_embedding", &[p, d]);
            for l in 0..cfg.layers {
                let b = format!("transformer.resblocks.{l}");
                o.norm(&format!("{b}.ln_1"), d);
                o.norm(&format!("{b}.ln_2"), d);
                o.t(&format!("{b}.attn.in_proj_weight"), &[3 * d, d]);
                o.t(&format!("{b}.attn.in_proj_bias"), &[3 * d]);
                o.wb(&format!("{b}.attn.out_proj"), &[d, d]);
                o.wb(&format!("{b}.mlp.c_fc"), &[i, d]);
                o.wb(&format!("{b}.mlp.c_proj"), &[d, i]);
            }
            o.norm("ln_final", d);
            if let Some(pd) = cfg.projection_dim {
                o.t("text_projection", &[d, pd]);
            }
            o.t("logit_scale", &[]);
        }
    }
    o.v
}

/// Sorts tensors into safetensors' serialisation order: dtype size descending, then name bytes.
pub fn sort_file_order(v: &mut [TensorSpec]) {
    v.sort_by(|a, b| {
        b.dtype
            .size()
            .cmp(&a.dtype.size())
            .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
    });
}
