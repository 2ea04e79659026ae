//! The CONDITIONING value: a list of `[cond, options]` entries, as in ComfyUI.

use candle_core::Tensor;

/// An `area` option: latent-pixel box or fractions of the latent size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Area {
    /// `(height, width, y, x)` in latent pixels (`ConditioningSetArea`: pixels // 8).
    Latent { h: usize, w: usize, y: usize, x: usize },
    /// `("percentage", height, width, y, x)`, resolved against the latent at sampling time.
    Percentage { h: f64, w: f64, y: f64, x: f64 },
}

/// The options dict of one entry (only the keys the core nodes use).
#[derive(Debug, Clone, Default)]
pub struct CondOpts {
    /// `pooled_output` `[1, P]`.
    pub pooled_output: Option<Tensor>,
    /// `area`.
    pub area: Option<Area>,
    /// `strength` (1.0 when absent).
    pub strength: Option<f64>,
    /// `set_area_to_bounds` (mask bounds become the area).
    pub set_area_to_bounds: bool,
    /// `mask` `[B, H, W]` (any resolution; resized to the latent at sampling time).
    pub mask: Option<Tensor>,
    /// `mask_strength`.
    pub mask_strength: Option<f64>,
    /// `start_percent` (ConditioningSetTimestepRange).
    pub start_percent: Option<f64>,
    /// `end_percent`.
    pub end_percent: Option<f64>,
    /// SDXL size conditioning (`width`, `height`, crops, targets).
    pub width: Option<f64>,
    /// SDXL `height`.
    pub height: Option<f64>,
    /// SDXL `crop_w`.
    pub crop_w: Option<f64>,
    /// SDXL `crop_h`.
    pub crop_h: Option<f64>,
    /// SDXL `target_width`.
    pub target_width: Option<f64>,
    /// SDXL `target_height`.
    pub target_height: Option<f64>,
    /// SDXL refiner `aesthetic_score`.
    pub aesthetic_score: Option<f64>,
}

/// One `[cond, options]` entry.
#[derive(Debug, Clone)]
pub struct CondEntry {
    /// Cross-attention context `[1, T, D]` (float32).
    pub cond: Tensor,
    /// Options.
    pub opts: CondOpts,
}

/// A CONDITIONING value.
#[derive(Debug, Clone, Default)]
pub struct Conditioning(pub Vec<CondEntry>);

impl Conditioning {
    /// A single entry with a pooled output (what CLIPTextEncode returns).
    pub fn single(cond: Tensor, pooled: Option<Tensor>) -> Self {
        Conditioning(vec![CondEntry { cond, opts: CondOpts { pooled_output: pooled, ..Default::default() } }])
    }

    /// Applies `f` to the options of every entry (the `node_helpers.conditioning_set_values` pattern).
    pub fn map_opts(&self, f: impl Fn(&mut CondOpts)) -> Self {
        Conditioning(
            self.0
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    f(&mut e.opts);
                    e
                })
                .collect(),
        )
    }
}
