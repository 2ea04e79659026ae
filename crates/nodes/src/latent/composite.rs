//! `LatentComposite`: pastes one latent into another, with optional feathered edges.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::types::Latent;
use crate::values::{latent, latent_value, usize_of};

/// `LatentComposite` (`nodes.py`). Offsets and feather are in pixels (divided by 8).
pub struct LatentComposite;

impl Node for LatentComposite {
    fn schema(&self) -> NodeSchema {
        let px = || json!({"default": 0, "min": 0, "max": 16384, "step": 8});
        NodeSchema::new("LatentComposite", "model/latent")
            .display(Some("Latent Composite"))
            .aliases(&["overlay latent", "layer latent", "paste latent"])
            .required("samples_to", "LATENT", json!({}))
            .required("samples_from", "LATENT", json!({}))
            .required("x", "INT", px())
            .required("y", "INT", px())
            .required("feather", "INT", px())
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let to_l = latent(inputs, "samples_to")?;
        let to = Array::from_tensor(&to_l.samples)?;
        let from = Array::from_tensor(&latent(inputs, "samples_from")?.samples)?;
        let x = usize_of(inputs, "x")? / 8;
        let y = usize_of(inputs, "y")? / 8;
        let feather = usize_of(inputs, "feather")? / 8;
        if to.shape.len() != 4 || from.shape.len() != 4 {
            return Err(NodeError::invalid_input("LATENT samples must be [B, C, H, W]"));
        }
        let (tb, tc, th, tw) = to.dims4();
        let (fb, fc, fh, fw) = from.dims4();
        if fc != tc || (fb != tb && fb != 1) {
            return Err(NodeError::invalid_input(format!(
                "Latent shapes {:?} and {:?} cannot be composited",
                from.shape, to.shape
            )));
        }
        // The pasted window, clipped to the destination.
        let ph = fh.min(th.saturating_sub(y));
        let pw = fw.min(tw.saturating_sub(x));
        let mut mask = vec![1f32; ph * pw];
        if feather > 0 {
            for t in 0..feather {
                let f = ((1.0f64 / feather as f64) * (t as f64 + 1.0)) as f32;
                let mut row = |r: usize| {
                    if r < ph {
                        mask[r * pw..(r + 1) * pw].iter_mut().for_each(|m| *m *= f);
                    }
                };
                if y != 0 {
                    row(t);
                }
                if y + ph < th && t < ph {
                    row(ph - 1 - t);
                }
                let mut col = |c: usize| {
                    if c < pw {
                        (0..ph).for_each(|r| mask[r * pw + c] *= f);
                    }
                };
                if x != 0 {
                    col(t);
                }
                if x + pw < tw && t < pw {
                    col(pw - 1 - t);
                }
            }
        }
        let mut out = to.clone();
        for b in 0..tb {
            let fbi = if fb == 1 { 0 } else { b };
            for c in 0..tc {
                for r in 0..ph {
                    for q in 0..pw {
                        let m = mask[r * pw + q];
                        let fv = from.data[((fbi * fc + c) * fh + r) * fw + q];
                        let di = ((b * tc + c) * th + y + r) * tw + x + q;
                        out.data[di] = if feather == 0 { fv } else { fv * m + out.data[di] * (1.0 - m) };
                    }
                }
            }
        }
        Ok(Outputs::new(vec![latent_value(Latent { samples: out.into_tensor()?, ..to_l.clone() })]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn comp(x: i64, y: i64, feather: i64, from: &[f32], fshape: &[usize]) -> Vec<f32> {
        let i = inputs(vec![
            ("samples_to", lval(&[1, 1, 3, 3], &[0.0; 9])),
            ("samples_from", lval(fshape, from)),
            ("x", j(json!(x))),
            ("y", j(json!(y))),
            ("feather", j(json!(feather))),
        ]);
        Array::from_tensor(&out_latent(&run(&LatentComposite, i).unwrap(), 0).samples).unwrap().data
    }

    #[test]
    fn pastes_clipped_and_feathered() {
        // 2x2 ones at latent (1,1) (pixels 8..15 -> 1).
        assert_eq!(comp(8, 15, 0, &[1.0; 4], &[1, 1, 2, 2]), vec![0., 0., 0., 0., 1., 1., 0., 1., 1.]);
        // At (2,2): only one element fits.
        assert_eq!(comp(16, 16, 0, &[1.0; 4], &[1, 1, 2, 2]), vec![0., 0., 0., 0., 0., 0., 0., 0., 1.]);
        // feather 16px = 2 latent px, 3x1 from at (x=8 -> 1, y=0) into 3x3 -> window 3 rows x 2 cols.
        // y == 0: no top ramp; bottom: y+3 == 3, not < 3 -> none; x != 0: col t *= (t+1)/2;
        // right: x + 2 == 3 -> none. Columns: col0 *= 0.5, col1 *= 1.0.
        let o = comp(8, 0, 16, &[1.0; 9], &[1, 1, 3, 3]);
        assert_close(&o, &[0., 0.5, 1., 0., 0.5, 1., 0., 0.5, 1.]);
    }
}
