//! `LatentFromBatch`: a slice of a latent batch, remembering which noise rows it had.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::types::Latent;
use crate::values::{latent, latent_value};

/// `LatentFromBatch` (`nodes.py`). Negative `batch_index` counts from the end (0.29 allows it).
pub struct LatentFromBatch;

impl Node for LatentFromBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LatentFromBatch", "model/latent/batch")
            .display(Some("Get Latent From Batch"))
            .aliases(&["select from batch", "pick latent", "batch subset"])
            .required("samples", "LATENT", json!({}))
            .required("batch_index", "INT", json!({"default": 0, "min": -16384, "max": 16384}))
            .required("length", "INT", json!({"default": 1, "min": 1, "max": 64}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let l = latent(inputs, "samples")?;
        let s = Array::from_tensor(&l.samples)?;
        let b = s.shape[0] as i64;
        if b == 0 {
            return Err(NodeError::invalid_input("Empty latent batch"));
        }
        let mut idx = inputs.i64("batch_index")?;
        if idx < 0 {
            idx = (idx + b).max(0);
        }
        let i = idx.min(b - 1);
        let n = (b - i).min(inputs.i64("length")?.max(1));
        let (iu, nu) = (i as usize, n as usize);
        let noise_mask = match &l.noise_mask {
            Some(m) => {
                let m = Array::from_tensor(m)?;
                if m.shape[0] == 1 {
                    Some(m.into_tensor()?)
                } else {
                    let m = if (m.shape[0] as i64) < b { m.repeat_to_batch(b as usize) } else { m };
                    let (s0, len) = crate::ops::array::clip_range(iu, nu, m.shape[0]);
                    Some(m.batch_slice(s0, len).into_tensor()?)
                }
            }
            None => None,
        };
        let batch_index = match &l.batch_index {
            Some(bi) => {
                let (s0, len) = crate::ops::array::clip_range(iu, nu, bi.len());
                bi[s0..s0 + len].to_vec()
            }
            None => (i..i + n).collect(),
        };
        let out = Latent { samples: s.batch_slice(iu, nu).into_tensor()?, noise_mask, batch_index: Some(batch_index) };
        Ok(Outputs::new(vec![latent_value(out)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn pick(l: Latent, idx: i64, len: i64) -> Latent {
        let i = inputs(vec![
            ("samples", comfy_graph::Value::object(l)),
            ("batch_index", j(json!(idx))),
            ("length", j(json!(len))),
        ]);
        out_latent(&run(&LatentFromBatch, i).unwrap(), 0)
    }

    #[test]
    fn slices_samples_masks_and_indices() {
        let s = Array::new(vec![4, 1, 1, 1], vec![0., 1., 2., 3.]).into_tensor().unwrap();
        let mut l = Latent::new(s);
        let o = pick(l.clone(), 1, 2);
        assert_eq!(Array::from_tensor(&o.samples).unwrap().data, vec![1., 2.]);
        assert_eq!(o.batch_index, Some(vec![1, 2]));
        // Clamped: index 9 -> 3, length 1.
        let o = pick(l.clone(), 9, 5);
        assert_eq!(Array::from_tensor(&o.samples).unwrap().data, vec![3.]);
        assert_eq!(o.batch_index, Some(vec![3]));
        // Negative index from the end.
        assert_eq!(pick(l.clone(), -1, 1).batch_index, Some(vec![3]));
        // Existing batch_index and a 2-entry mask (repeated to 4 first).
        l.batch_index = Some(vec![10, 11, 12, 13]);
        l.noise_mask = Some(Array::new(vec![2, 1, 1, 1], vec![0.25, 0.75]).into_tensor().unwrap());
        let o = pick(l, 2, 2);
        assert_eq!(o.batch_index, Some(vec![12, 13]));
        assert_eq!(Array::from_tensor(o.noise_mask.as_ref().unwrap()).unwrap().data, vec![0.25, 0.75]);
    }
}
