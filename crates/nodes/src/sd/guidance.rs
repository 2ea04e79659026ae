//! Conditioning evaluation between the sampler and the network: ComfyUI's `process_conds`
//! (area/mask resolution, timestep ranges, SDXL ADM, same-area uncond entries),
//! `calc_cond_batch` (per-entry crops, feathered area weights, batching, weighted averaging)
//! and `sampling_function` (CFG, cfg = 1 shortcut), plus the inpainting noise-mask blend
//! (`KSamplerX0Inpaint`). Implements [`comfy_sampling::Denoiser`].

use candle_core::{Device, Tensor};
use comfy_diffusion::clip::adm::{sdxl_adm, sdxl_refiner_adm, SdxlSize};
use comfy_sampling::cfg::{cfg_function, cfg_is_one};
use comfy_sampling::{Denoised, Denoiser, SamplingError};

use crate::ops::resample::{common_upscale, Method};
use crate::ops::Array;
use crate::sd::cond::{Area, Conditioning};
use crate::sd::model::{AdmKind, SdModel};

type SResult<T> = comfy_sampling::Result<T>;

fn inv(msg: impl Into<String>) -> SamplingError {
    SamplingError::Invalid(msg.into())
}

fn arr(t: &Tensor) -> SResult<Array> {
    Array::from_tensor(t).map_err(|e| inv(e.to_string()))
}

/// One conditioning entry ready for sampling (ComfyUI's processed cond dict).
#[derive(Debug, Clone)]
pub struct PreparedCond {
    /// `(h, w, y, x)` in latent pixels.
    pub area: Option<[usize; 4]>,
    /// `strength`.
    pub strength: f32,
    /// Mask `[Bm, H, W]` at latent resolution.
    pub mask: Option<Array>,
    /// `mask_strength`.
    pub mask_strength: f32,
    /// The entry is used only while `σ ≤ sigma_start` ...
    pub sigma_start: Option<f32>,
    /// ... and `σ ≥ sigma_end`.
    pub sigma_end: Option<f32>,
    /// `c_crossattn` `[1, T, D]`.
    pub crossattn: Tensor,
    /// SDXL `y` `[1, adm]`.
    pub y: Option<Tensor>,
}

/// `resolve_areas_and_cond_masks_multidim` + `calculate_start_end_timesteps` +
/// `encode_model_conds` for one list. `latent_hw` = latent `(H, W)`; `negative` selects the
/// refiner's default aesthetic score.
fn prepare_list(model: &SdModel, conds: &Conditioning, latent_hw: (usize, usize), negative: bool) -> SResult<Vec<PreparedCond>> {
    let (lh, lw) = latent_hw;
    let mut out = Vec::with_capacity(conds.0.len());
    for e in &conds.0 {
        let o = &e.opts;
        let mut area = match o.area {
            None => None,
            Some(Area::Latent { h, w, y, x }) => Some([h, w, y, x]),
            Some(Area::Percentage { h, w, y, x }) => {
                let r = |p: f64, d: usize| crate::ops::array::py_round(p * d as f64).max(0) as usize;
                Some([r(h, lh).max(1), r(w, lw).max(1), r(y, lh), r(x, lw)])
            }
        };
        let mask = match &o.mask {
            None => None,
            Some(m) => {
                let a = arr(m)?;
                let a = crate::values::mask_from(a, "mask").map_err(|e| inv(e.to_string()))?;
                let (b, h, w) = a.dims3();
                let a = if (h, w) != (lh, lw) {
                    let a4 = Array::new(vec![b, 1, h, w], a.data);
                    let r = common_upscale(&a4, lw, lh, Method::Bilinear, false).map_err(|e| inv(e.to_string()))?;
                    Array::new(vec![b, lh, lw], r.data)
                } else {
                    a
                };
                if o.set_area_to_bounds {
                    area = Some(mask_bounds(&a));
                }
                Some(a)
            }
        };
        let ms = &model.sampling;
        let sigma_start = o.start_percent.map(|p| ms.percent_to_sigma(p) as f32);
        let sigma_end = o.end_percent.map(|p| ms.percent_to_sigma(p) as f32);
        let y = match model.adm {
            AdmKind::None => None,
            kind => {
                let pooled = match &o.pooled_output {
                    Some(p) => p.to_dtype(candle_core::DType::F32)?,
                    None => return Err(inv("this SDXL conditioning has no pooled_output")),
                };
                let width = o.width.unwrap_or((lw * 8) as f64);
                let height = o.height.unwrap_or((lh * 8) as f64);
                let (crop_w, crop_h) = (o.crop_w.unwrap_or(0.0), o.crop_h.unwrap_or(0.0));
                let y = if kind == AdmKind::Sdxl {
                    let size = SdxlSize {
                        width,
                        height,
                        crop_w,
                        crop_h,
                        target_width: o.target_width.unwrap_or(width),
                        target_height: o.target_height.unwrap_or(height),
                    };
                    sdxl_adm(&pooled, &size)
                } else {
                    let score = o.aesthetic_score.unwrap_or(if negative { 2.5 } else { 6.0 });
                    sdxl_refiner_adm(&pooled, width, height, crop_w, crop_h, score)
                };
                Some(y.map_err(|e| inv(e.to_string()))?)
            }
        };
        out.push(PreparedCond {
            area,
            strength: o.strength.unwrap_or(1.0) as f32,
            mask,
            mask_strength: o.mask_strength.unwrap_or(1.0) as f32,
            sigma_start,
            sigma_end,
            crossattn: e.cond.to_dtype(candle_core::DType::F32)?,
            y,
        });
    }
    Ok(out)
}

/// The bounding box of a mask's non-zero pixels over all batch rows, min 8×8;
/// an empty mask gives `(8, 8, 0, 0)`.
fn mask_bounds(m: &Array) -> [usize; 4] {
    let (b, h, w) = m.dims3();
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for yy in 0..h {
        for xx in 0..w {
            if (0..b).any(|k| m.data[(k * h + yy) * w + xx] != 0.0) {
                x0 = x0.min(xx);
                y0 = y0.min(yy);
                x1 = x1.max(xx);
                y1 = y1.max(yy);
            }
        }
    }
    if x0 == usize::MAX {
        return [8, 8, 0, 0];
    }
    [(y1 - y0 + 1).max(8), (x1 - x0 + 1).max(8), y0, x0]
}

/// `area_inside(a, cmp)`: `a`'s box lies inside `cmp`'s.
fn area_inside(a: &[usize; 4], c: &[usize; 4]) -> bool {
    a[2] >= c[2] && a[3] >= c[3] && a[0] + a[2] <= c[0] + c[2] && a[1] + a[3] <= c[1] + c[3]
}

/// `create_cond_with_same_area_if_none`: gives `list` an entry with `c`'s area (and mask,
/// strength, range) but the model conds of `list`'s smallest entry enclosing it.
fn add_same_area(list: &mut Vec<PreparedCond>, c: &PreparedCond) {
    let Some(ca) = c.area else { return };
    let mut smallest: Option<usize> = None;
    for (i, x) in list.iter().enumerate() {
        match x.area {
            Some(a) => {
                if area_inside(&ca, &a) {
                    smallest = match smallest {
                        None => Some(i),
                        Some(s) => match list[s].area {
                            None => Some(i),
                            Some(sa) if sa[0] * sa[1] > a[0] * a[1] => Some(i),
                            Some(_) => Some(s),
                        },
                    };
                }
            }
            None => {
                if smallest.is_none() {
                    smallest = Some(i);
                }
            }
        }
    }
    let Some(s) = smallest else { return };
    if list[s].area == Some(ca) {
        return;
    }
    let mut out = c.clone();
    out.crossattn = list[s].crossattn.clone();
    out.y = list[s].y.clone();
    list.push(out);
}

/// Processes the positive (and optional negative) lists for a latent of `latent_hw`.
pub fn prepare_conds(
    model: &SdModel,
    positive: &Conditioning,
    negative: Option<&Conditioning>,
    latent_hw: (usize, usize),
) -> SResult<(Vec<PreparedCond>, Option<Vec<PreparedCond>>)> {
    let mut pos = prepare_list(model, positive, latent_hw, false)?;
    let mut neg = match negative {
        Some(n) => Some(prepare_list(model, n, latent_hw, true)?),
        None => None,
    };
    if let Some(neg) = neg.as_mut() {
        // ComfyUI iterates positive then negative, over the lists as they grow.
        let mut i = 0;
        while i < pos.len() {
            let c = pos[i].clone();
            add_same_area(neg, &c);
            i += 1;
        }
        let mut i = 0;
        while i < neg.len() {
            let c = neg[i].clone();
            add_same_area(&mut pos, &c);
            i += 1;
        }
    }
    Ok((pos, neg))
}

/// `repeat_to_batch_size` along dim 0.
fn repeat_to_batch(t: &Tensor, b: usize) -> SResult<Tensor> {
    let n = t.dim(0)?;
    Ok(if n > b {
        t.narrow(0, 0, b)?
    } else if n < b {
        let reps = b.div_ceil(n);
        let mut dims = vec![1; t.rank()];
        dims[0] = reps;
        t.repeat(dims)?.narrow(0, 0, b)?
    } else {
        t.clone()
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// One entry evaluated at one step (ComfyUI's `cond_obj`).
struct Chunk {
    input_x: Tensor,
    mult: Array,
    crossattn: Tensor,
    y: Option<Tensor>,
    area: Option<[usize; 4]>,
    list: usize,
}

/// `get_area_and_mult`: `None` when the entry's timestep range excludes σ.
fn area_and_mult(c: &PreparedCond, x: &Tensor, sigma: f32, list: usize) -> SResult<Option<Chunk>> {
    if let Some(s) = c.sigma_start {
        if sigma > s {
            return Ok(None);
        }
    }
    if let Some(e) = c.sigma_end {
        if sigma < e {
            return Ok(None);
        }
    }
    let (b, ch, h, w) = x.dims4()?;
    let mut area = c.area;
    let mut input_x = x.clone();
    if let Some(a) = area.as_mut() {
        if a[2] >= h || a[3] >= w {
            return Err(inv(format!("conditioning area {a:?} lies outside the {h}x{w} latent")));
        }
        a[0] = a[0].min(h - a[2]);
        a[1] = a[1].min(w - a[3]);
        input_x = input_x.narrow(2, a[2], a[0])?.narrow(3, a[3], a[1])?;
    }
    let (ih, iw) = (input_x.dim(2)?, input_x.dim(3)?);
    let mut mult = match &c.mask {
        Some(m) => {
            let (mb, mh, mw) = m.dims3();
            if (mh, mw) != (h, w) {
                return Err(inv("conditioning mask was not resized to the latent"));
            }
            let mb = mb.min(b);
            let m = Array::new(vec![mb, mh, mw], m.data[..mb * mh * mw].to_vec());
            let m = match area {
                Some(a) => m.crop_last2(a[2], a[3], a[0], a[1]),
                None => m,
            };
            if mb == 0 || b % mb != 0 {
                return Err(inv(format!("conditioning mask batch {mb} does not divide the latent batch {b}")));
            }
            let mut data = Vec::with_capacity(b * ch * ih * iw);
            for r in 0..b / mb {
                let _ = r;
                for k in 0..mb {
                    let plane = &m.data[k * ih * iw..(k + 1) * ih * iw];
                    for _ in 0..ch {
                        data.extend(plane.iter().map(|v| v * c.mask_strength));
                    }
                }
            }
            Array::new(vec![b, ch, ih, iw], data)
        }
        None => Array::full(vec![b, ch, ih, iw], 1.0),
    };
    for v in mult.data.iter_mut() {
        *v *= c.strength;
    }
    if c.mask.is_none() {
        if let Some(a) = area {
            // Feather the borders that are not on the latent's edge.
            let dims = [(a[0], a[2], h), (a[1], a[3], w)];
            for (axis, &(size, off, full)) in dims.iter().enumerate() {
                let rr = 8.min(size / 4);
                let mut scale_line = |idx: usize, f: f32| {
                    for bb in 0..b * ch {
                        for yy in 0..ih {
                            for xx in 0..iw {
                                let hit = if axis == 0 { yy == idx } else { xx == idx };
                                if hit {
                                    mult.data[(bb * ih + yy) * iw + xx] *= f;
                                }
                            }
                        }
                    }
                };
                if off != 0 {
                    for t in 0..rr {
                        scale_line(t, ((1.0 / rr as f64) * (t + 1) as f64) as f32);
                    }
                }
                if size + off < full {
                    for t in 0..rr {
                        scale_line(size - 1 - t, ((1.0 / rr as f64) * (t + 1) as f64) as f32);
                    }
                }
            }
        }
    }
    Ok(Some(Chunk {
        input_x,
        mult,
        crossattn: repeat_to_batch(&c.crossattn, b)?,
        y: match &c.y {
            Some(y) => Some(repeat_to_batch(y, b)?),
            None => None,
        },
        area,
        list,
    }))
}

/// `can_concat_cond`.
fn can_concat(a: &Chunk, b: &Chunk) -> bool {
    if a.input_x.dims() != b.input_x.dims() {
        return false;
    }
    let (s1, s2) = (a.crossattn.dims(), b.crossattn.dims());
    if s1 != s2 {
        if s1[0] != s2[0] || s1[2] != s2[2] {
            return false;
        }
        if lcm(s1[1], s2[1]) / s1[1].min(s2[1]) > 4 {
            return false;
        }
    }
    match (&a.y, &b.y) {
        (None, None) => true,
        (Some(x), Some(y)) => x.dims() == y.dims(),
        _ => false,
    }
}

/// Rows × latent pixels one batched model call may hold (bounds activation memory).
const MAX_BATCH_PIXELS: usize = 2 * 128 * 128;

/// `calc_cond_batch` for the lists (`None` = skipped): the per-list predictions.
pub fn calc_cond_batch(model: &SdModel, lists: [Option<&[PreparedCond]>; 2], x: &Tensor, sigma: f32) -> SResult<[Tensor; 2]> {
    let dims = x.dims4()?;
    let (b, ch, h, w) = dims;
    let n = b * ch * h * w;
    let mut out = [vec![0f32; n], vec![0f32; n]];
    let mut cnt = [vec![1e-37f32; n], vec![1e-37f32; n]];
    let mut to_run = Vec::new();
    for (i, l) in lists.iter().enumerate() {
        if let Some(l) = l {
            for c in l.iter() {
                if let Some(chunk) = area_and_mult(c, x, sigma, i)? {
                    to_run.push(chunk);
                }
            }
        }
    }
    while !to_run.is_empty() {
        let mut temp: Vec<usize> = (0..to_run.len()).filter(|&k| can_concat(&to_run[k], &to_run[0])).collect();
        temp.reverse();
        let rows0 = to_run[0].input_x.dim(0)?;
        let px = to_run[0].input_x.dim(2)? * to_run[0].input_x.dim(3)?;
        let mut take = temp[..1].to_vec();
        for i in 1..=temp.len() {
            let amount = temp.len() / i;
            if amount * rows0 * px <= MAX_BATCH_PIXELS || amount <= 1 {
                take = temp[..amount.max(1)].to_vec();
                break;
            }
        }
        // Indices are descending, so removing in order keeps the rest valid.
        let batch: Vec<Chunk> = take.iter().map(|&k| to_run.remove(k)).collect();
        let xs: Vec<&Tensor> = batch.iter().map(|c| &c.input_x).collect();
        let input_x = Tensor::cat(&xs, 0)?;
        let max_len = batch.iter().fold(batch[0].crossattn.dim(1)?, |acc, c| lcm(acc, c.crossattn.dim(1).unwrap_or(acc)));
        let mut ctx = Vec::with_capacity(batch.len());
        for c in &batch {
            let t = c.crossattn.dim(1)?;
            ctx.push(if t < max_len { c.crossattn.repeat((1, max_len / t, 1))? } else { c.crossattn.clone() });
        }
        let context = Tensor::cat(&ctx, 0)?;
        let y = match batch[0].y {
            Some(_) => {
                let ys: Vec<&Tensor> = batch.iter().filter_map(|c| c.y.as_ref()).collect();
                Some(Tensor::cat(&ys, 0)?)
            }
            None => None,
        };
        let rows = input_x.dim(0)?;
        // The sampler's tensors live on the CPU (noise from the CPU generator, as ComfyUI);
        // the model's inputs go to the compute device it was loaded on (a no-op on the CPU).
        let dev = crate::sd::device::device();
        let input_x = input_x.to_device(&dev)?;
        let context = context.to_device(&dev)?;
        let y = match y {
            Some(t) => Some(t.to_device(&dev)?),
            None => None,
        };
        let pred = model.net.apply_model(&input_x, &vec![sigma; rows], &context, y.as_ref())?;
        let pred = arr(&pred)?;
        let per = pred.data.len() / batch.len();
        for (k, c) in batch.iter().enumerate() {
            let o = &pred.data[k * per..(k + 1) * per];
            let (acc, cn) = (&mut out[c.list], &mut cnt[c.list]);
            let (ah, aw, ay, ax) = match c.area {
                Some(a) => (a[0], a[1], a[2], a[3]),
                None => (h, w, 0, 0),
            };
            for bc in 0..b * ch {
                for yy in 0..ah {
                    for xx in 0..aw {
                        let src = (bc * ah + yy) * aw + xx;
                        let dst = (bc * h + yy + ay) * w + xx + ax;
                        let m = c.mult.data[src];
                        acc[dst] += o[src] * m;
                        cn[dst] += m;
                    }
                }
            }
        }
    }
    let dev = x.device();
    let finish = |acc: &[f32], cn: &[f32]| -> SResult<Tensor> {
        let v: Vec<f32> = acc.iter().zip(cn).map(|(a, c)| a / c).collect();
        Ok(Tensor::from_vec(v, (b, ch, h, w), &Device::Cpu)?.to_device(dev)?)
    };
    Ok([finish(&out[0], &cnt[0])?, finish(&out[1], &cnt[1])?])
}

/// The inpainting state of `KSamplerX0Inpaint`.
pub struct Inpaint {
    /// Denoise mask `[B, C, H, W]` (1 = may change).
    pub mask: Tensor,
    /// The input latent in model space.
    pub latent: Tensor,
    /// The noise blended into the kept region.
    pub noise: Tensor,
}

/// The guided denoiser a sampler calls (CFGGuider / BasicGuider with ComfyUI's conditioning).
pub struct CondDenoiser<'m> {
    /// The model.
    pub model: &'m SdModel,
    /// Processed positive entries.
    pub positive: Vec<PreparedCond>,
    /// Processed negative entries (`None` for BasicGuider).
    pub negative: Option<Vec<PreparedCond>>,
    /// Guidance scale.
    pub cfg: f64,
    /// Noise-mask inpainting.
    pub inpaint: Option<Inpaint>,
}

impl Denoiser for CondDenoiser<'_> {
    fn denoise(&mut self, x: &Tensor, sigma: f32, need_uncond: bool) -> SResult<Denoised> {
        let x = match &self.inpaint {
            Some(ip) => {
                let keep = ip.mask.affine(-1.0, 1.0)?;
                let orig = (ip.latent.clone() + ip.noise.affine(sigma as f64, 0.0)?)?;
                ((x * &ip.mask)? + (orig * keep)?)?
            }
            None => x.clone(),
        };
        let skip_uncond = cfg_is_one(self.cfg) && !need_uncond;
        let uncond = if skip_uncond { None } else { self.negative.as_deref() };
        let [cond_pred, uncond_pred] = calc_cond_batch(self.model, [Some(&self.positive), uncond], &x, sigma)?;
        let mut denoised = cfg_function(&cond_pred, &uncond_pred, self.cfg)?;
        if let Some(ip) = &self.inpaint {
            let keep = ip.mask.affine(-1.0, 1.0)?;
            denoised = ((denoised * &ip.mask)? + (&ip.latent * keep)?)?;
        }
        Ok(Denoised { denoised, uncond: if need_uncond { Some(uncond_pred) } else { None } })
    }
}
