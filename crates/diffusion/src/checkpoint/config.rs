//! Model configuration structs, as detected from a checkpoint's tensor names and shapes.
//!
//! These are the inputs of the model constructors: [`UnetConfig`] for `unet`, [`VaeConfig`] for
//! `vae`, [`TextEncoderConfig`] for `clip`. The field meanings follow ComfyUI's
//! `detect_unet_config` (LDM `openaimodel` naming).

/// Which ComfyUI model family a checkpoint belongs to (decides text encoders, head layout,
/// latent format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD1.x: CLIP-L, conv `proj_in`, 8 heads per attention.
    Sd1,
    /// SD2.x: OpenCLIP-H, linear `proj_in`, head dim 64.
    Sd2,
    /// SDXL base: CLIP-L + OpenCLIP-G, ADM vector (2816 for the full model), head dim 64.
    Sdxl,
    /// SDXL refiner: OpenCLIP-G only, ADM with aesthetic score (2560), head dim 64.
    SdxlRefiner,
}

impl Family {
    /// Latent scale factor (`process_latent_in` multiplies by it).
    pub fn latent_scale_factor(self) -> f64 {
        match self {
            Family::Sd1 | Family::Sd2 => 0.18215,
            Family::Sdxl | Family::SdxlRefiner => 0.13025,
        }
    }

    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd1 => "SD1.x",
            Family::Sd2 => "SD2.x",
            Family::Sdxl => "SDXL",
            Family::SdxlRefiner => "SDXL refiner",
        }
    }
}

/// What the UNet output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    /// Noise prediction (`denoised = x - eps * sigma`).
    Eps,
    /// v-prediction (`denoised = x * c_skip - v * c_out`).
    V,
}

/// How attention heads are laid out in the UNet's transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadSpec {
    /// A fixed number of heads; head dim = channels / n (SD1.x: 8).
    Count(usize),
    /// A fixed head dim; heads = channels / d (SD2.x, SDXL: 64).
    Dim(usize),
}

/// LDM UNet hyper-parameters (ComfyUI `unet_config`), read from `model.diffusion_model.*`.
///
/// Block indexing: `input_blocks.0` is `conv_in`; then per level `num_res_blocks[level]` res
/// blocks (each optionally followed by a transformer of depth `transformer_depth[k]`, `k` counting
/// input res blocks over all levels) and, except after the last level, a downsample block.
/// `output_blocks` mirror this in decoder order with `num_res_blocks[level] + 1` res blocks per
/// level (`transformer_depth_output[k]`), the last block of each level except level 0 ending in
/// an upsample.
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConfig {
    /// Latent channels in (4; 9 for inpainting UNets).
    pub in_channels: usize,
    /// Channels out (4).
    pub out_channels: usize,
    /// Base width (320 for SD1/SD2/SDXL, 384 for the refiner).
    pub model_channels: usize,
    /// Width multiplier per level (SD1 `[1,2,4,4]`, SDXL `[1,2,4]`).
    pub channel_mult: Vec<usize>,
    /// Res blocks per level on the input side (output side has one more).
    pub num_res_blocks: Vec<usize>,
    /// Transformer depth after each input res block (0 = none), in block order.
    pub transformer_depth: Vec<usize>,
    /// Transformer depth after each output res block (0 = none), in block order.
    pub transformer_depth_output: Vec<usize>,
    /// Middle block: `Some(depth)` = Res, Transformer(depth), Res; `None` = Res only.
    pub transformer_depth_middle: Option<usize>,
    /// Cross-attention context width (768 SD1, 1024 SD2, 2048 SDXL, 1280 refiner).
    pub context_dim: usize,
    /// `proj_in`/`proj_out` are Linear (true) or 1x1 conv (false, SD1).
    pub use_linear_in_transformer: bool,
    /// Attention head layout.
    pub heads: HeadSpec,
    /// Width of the ADM vector fed to `label_emb` (SDXL 2816, refiner 2560), if any.
    pub adm_in_channels: Option<usize>,
}

impl UnetConfig {
    /// Width of the time embedding (`4 * model_channels`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.model_channels
    }

    /// `(num_heads, head_dim)` for a transformer with `channels` channels, or `None` when the
    /// head layout does not divide the width.
    pub fn heads_for(&self, channels: usize) -> Option<(usize, usize)> {
        match self.heads {
            HeadSpec::Count(n) if n > 0 && channels.is_multiple_of(n) => Some((n, channels / n)),
            HeadSpec::Dim(d) if d > 0 && channels.is_multiple_of(d) && channels >= d => {
                Some((channels / d, d))
            }
            _ => None,
        }
    }
}

/// KL autoencoder hyper-parameters (LDM `ddconfig`), read from `first_stage_model.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Image channels (3).
    pub in_channels: usize,
    /// Decoded image channels (3).
    pub out_ch: usize,
    /// Base width (128).
    pub ch: usize,
    /// Width multiplier per level (`[1,2,4,4]`); `len - 1` downsamplings.
    pub ch_mult: Vec<usize>,
    /// Res blocks per encoder level (decoder has one more).
    pub num_res_blocks: usize,
    /// Latent channels (4).
    pub z_channels: usize,
    /// Channels between `quant_conv` and `post_quant_conv` (4).
    pub embed_dim: usize,
    /// Whether `quant_conv`/`post_quant_conv` exist.
    pub has_quant_conv: bool,
    /// Whether the mid blocks have an attention layer (`mid.attn_1`).
    pub mid_attention: bool,
}

impl VaeConfig {
    /// The SD1.x/SD2.x/SDXL VAE.
    pub fn sd() -> Self {
        VaeConfig {
            in_channels: 3,
            out_ch: 3,
            ch: 128,
            ch_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            z_channels: 4,
            embed_dim: 4,
            has_quant_conv: true,
            mid_attention: true,
        }
    }

    /// Spatial down-scale factor between image and latent (8 for 4 levels).
    pub fn downscale(&self) -> usize {
        1 << (self.ch_mult.len().saturating_sub(1))
    }
}

/// Which text tower a [`TextEncoderConfig`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipKind {
    /// OpenAI CLIP ViT-L/14 text model (SD1.x, SDXL `clip_l`): quick-GELU, pads with 49407.
    L,
    /// OpenCLIP ViT-H text tower (SD2.x): GELU, pads with 0.
    H,
    /// OpenCLIP ViT-bigG text tower (SDXL `clip_g`): GELU, pads with 0.
    G,
}

/// Key layout of a text encoder inside the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipLayout {
    /// Hugging Face `CLIPTextModel` names under `<prefix>` (= `...text_model.`).
    HuggingFace,
    /// OpenCLIP names (`token_embedding`, `transformer.resblocks.N`, `ln_final`, ...).
    OpenClip,
}

/// MLP activation of a text encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU (OpenCLIP).
    Gelu,
}

/// One text encoder in a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TextEncoderConfig {
    /// Which tower.
    pub kind: ClipKind,
    /// Key layout.
    pub layout: ClipLayout,
    /// Key prefix including the trailing dot, e.g. `cond_stage_model.transformer.text_model.`
    /// or `conditioner.embedders.1.model.`.
    pub prefix: String,
    /// Vocabulary size (49408).
    pub vocab_size: usize,
    /// Number of positions (77).
    pub max_positions: usize,
    /// Hidden width (768 / 1024 / 1280).
    pub hidden: usize,
    /// MLP width (4 × hidden).
    pub intermediate: usize,
    /// Number of transformer layers (12 / 24 / 32).
    pub layers: usize,
    /// Attention heads (hidden / 64).
    pub heads: usize,
    /// MLP activation.
    pub activation: Activation,
    /// Output width of `text_projection`, if the checkpoint has one.
    pub projection_dim: Option<usize>,
}

impl TextEncoderConfig {
    /// Token used to pad windows (49407 for CLIP-L, 0 for OpenCLIP towers).
    pub fn pad_token(&self) -> u32 {
        match self.kind {
            ClipKind::L => 49407,
            ClipKind::H | ClipKind::G => 0,
        }
    }

    /// Key prefix ComfyUI uses for this tower in embedding files (`clip_l`, `clip_h`, `clip_g`).
    pub fn embedding_key(&self) -> &'static str {
        match self.kind {
            ClipKind::L => "clip_l",
            ClipKind::H => "clip_h",
            ClipKind::G => "clip_g",
        }
    }
}

/// Everything detected about a single-file checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Model family.
    pub family: Family,
    /// UNet output parameterisation.
    pub prediction: Prediction,
    /// UNet hyper-parameters (keys under `model.diffusion_model.`).
    pub unet: UnetConfig,
    /// VAE hyper-parameters (keys under `first_stage_model.`), if the file has a VAE.
    pub vae: Option<VaeConfig>,
    /// Text encoders in ComfyUI order (SDXL: `clip_l` then `clip_g`).
    pub text_encoders: Vec<TextEncoderConfig>,
    /// ComfyUI's `supported_models` class the UNet config matches exactly (`SD15`, `SD20`,
    /// `SDXL`, `SDXLRefiner`, ...), or `None` for non-standard widths/depths (e.g. the tiny
    /// recipe models), which this crate still runs.
    pub comfy_model: Option<&'static str>,
}
