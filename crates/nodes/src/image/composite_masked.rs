//! `ImageCompositeMasked`: pastes a source image onto a destination through a mask.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::resample::{common_upscale, Method};
use crate::ops::Array;
use crate::values::{image, mask, tensor_value, usize_of};

/// `ImageCompositeMasked` (`comfy_extras.nodes_mask`, V3).
pub struct ImageCompositeMasked;

impl Node for ImageCompositeMasked {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ImageCompositeMasked", "image/compositing")
            .v3()
            .display(Some("Image Composite Masked"))
            .module("comfy_extras.nodes_mask")
            .aliases(&["overlay", "layer", "paste image", "images composition"])
            .required("destination", "IMAGE", json!({}))
            .required("source", "IMAGE", json!({}))
            .required("x", "INT", json!({"default": 0, "min": 0, "max": 16384, "step": 1}))
            .required("y", "INT", json!({"default": 0, "min": 0, "max": 16384, "step": 1}))
            .required("resize_source", "BOOLEAN", json!({"default": false}))
            .optional("mask", "MASK", json!({}))
            .output("IMAGE")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let dst = image(inputs, "destination")?;
        let mut src = image(inputs, "source")?;
        let x = usize_of(inputs, "x")?;
        let y = usize_of(inputs, "y")?;
        let resize = inputs.bool("resize_source").unwrap_or(false);
        let m = if inputs.get("mask").is_some() { Some(mask(inputs, "mask")?) } else { None };
        // Alpha fix: match the source's channel count to the destination's.
        let dc = dst.shape[3];
        if src.shape[3] != dc {
            src = fix_channels(&src, dc);
        }
        Ok(Outputs::new(vec![tensor_value(composite(dst, &src, x, y, m.as_ref(), resize)?)?]))
    }
}

/// Truncates extra channels, or pads missing ones with 1.0 (an opaque alpha).
fn fix_channels(src: &Array, c: usize) -> Array {
    let (b, h, w, sc) = src.dims4();
    let mut data = Vec::with_capacity(b * h * w * c);
    for px in src.data.chunks_exact(sc) {
        for i in 0..c {
            data.push(if i < sc { px[i] } else { 1.0 });
        }
    }
    Array::new(vec![b, h, w, c], data)
}

/// ComfyUI's `composite(destination, source, x, y, mask, multiplier=1, resize_source)` on
/// `[B,H,W,C]` arrays: `mask·src + (1−mask)·dst` in the overlap.
pub fn composite(
    mut dst: Array,
    src: &Array,
    x: usize,
    y: usize,
    m: Option<&Array>,
    resize: bool,
) -> Result<Array, NodeError> {
    let (db, dh, dw, c) = dst.dims4();
    let mut src = src.nhwc_to_nchw();
    if resize {
        src = common_upscale(&src, dw, dh, Method::Bilinear, false)?;
    }
    let src = src.repeat_to_batch(db);
    let (_, _, sh, sw) = src.dims4();
    let left = x.min(dw);
    let top = y.min(dh);
    let mask = match m {
        Some(m) => {
            let (mb, mh, mw) = m.dims3();
            let m4 = Array::new(vec![mb, 1, mh, mw], m.data.clone());
            common_upscale(&m4, sw, sh, Method::Bilinear, false)?.repeat_to_batch(db)
        }
        None => Array::full(vec![db, 1, sh, sw], 1.0),
    };
    let vis_h = sh.min(dh - top);
    let vis_w = sw.min(dw - left);
    for b in 0..db {
        for yy in 0..vis_h {
            for xx in 0..vis_w {
                let mv = mask.data[(b * sh + yy) * sw + xx];
                for ch in 0..c {
                    let sv = src.data[((b * c + ch) * sh + yy) * sw + xx];
                    let di = ((b * dh + top + yy) * dw + left + xx) * c + ch;
                    dst.data[di] = mv * sv + (1.0 - mv) * dst.data[di];
                }
            }
        }
    }
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn composites_with_mask_and_offset() {
        // dst 2x3 grey-1ch zeros; src 1x2 ones at (x=2, y=1): only one column visible.
        let dst = tval(&[1, 2, 3, 1], &[0.0; 6]);
        let src = tval(&[1, 1, 2, 1], &[1.0, 1.0]);
        let o = run(
            &ImageCompositeMasked,
            inputs(vec![
                ("destination", dst.clone()),
                ("source", src.clone()),
                ("x", j(json!(2))),
                ("y", j(json!(1))),
                ("resize_source", j(json!(false))),
            ]),
        )
        .unwrap();
        assert_eq!(out(&o, 0).data, vec![0., 0., 0., 0., 0., 1.]);
        // With a half mask (same size as the source).
        let m = tval(&[1, 1, 2], &[0.5, 0.25]);
        let o = run(
            &ImageCompositeMasked,
            inputs(vec![
                ("destination", dst.clone()),
                ("source", src.clone()),
                ("x", j(json!(0))),
                ("y", j(json!(0))),
                ("resize_source", j(json!(false))),
                ("mask", m),
            ]),
        )
        .unwrap();
        assert_eq!(out(&o, 0).data, vec![0.5, 0.25, 0., 0., 0., 0.]);
        // resize_source: the 1x2 source stretched over the whole 2x3 destination.
        let o = run(
            &ImageCompositeMasked,
            inputs(vec![
                ("destination", dst),
                ("source", src),
                ("x", j(json!(0))),
                ("y", j(json!(0))),
                ("resize_source", j(json!(true))),
            ]),
        )
        .unwrap();
        assert_eq!(out(&o, 0).data, vec![1.0; 6]);
    }

    #[test]
    fn channel_fix() {
        let dst = tval(&[1, 1, 1, 4], &[0., 0., 0., 0.]);
        let src = tval(&[1, 1, 1, 3], &[0.2, 0.4, 0.6]);
        let o = run(
            &ImageCompositeMasked,
            inputs(vec![
                ("destination", dst),
                ("source", src),
                ("x", j(json!(0))),
                ("y", j(json!(0))),
                ("resize_source", j(json!(false))),
            ]),
        )
        .unwrap();
        assert_close(&out(&o, 0).data, &[0.2, 0.4, 0.6, 1.0]);
    }
}
