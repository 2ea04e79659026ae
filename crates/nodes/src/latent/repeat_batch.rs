//! `RepeatLatentBatch`: repeats a latent batch `amount` times.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use crate::ops::Array;
use crate::types::Latent;
use crate::values::{latent, latent_value, usize_of};

/// `RepeatLatentBatch` (`nodes.py`).
pub struct RepeatLatentBatch;

impl Node for RepeatLatentBatch {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("RepeatLatentBatch", "model/latent/batch")
            .display(Some("Repeat Latent Batch"))
            .aliases(&["duplicate latent", "clone latent"])
            .required("samples", "LATENT", json!({}))
            .required("amount", "INT", json!({"default": 1, "min": 1, "max": 64}))
            .output("LATENT")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let l = latent(inputs, "samples")?;
        let amount = usize_of(inputs, "amount")?.max(1);
        let s = Array::from_tensor(&l.samples)?;
        let mut out = Latent { samples: s.tile_batch(amount).into_tensor()?, ..l.clone() };
        if let Some(m) = &l.noise_mask {
            let m = Array::from_tensor(m)?;
            if m.shape[0] > 1 {
                // ComfyUI tiles the original mask (its batch-size fix-up result is unused).
                out.noise_mask = Some(m.tile_batch(amount).into_tensor()?);
            }
        }
        if let Some(bi) = &l.batch_index {
            if let (Some(mx), Some(mn)) = (bi.iter().max(), bi.iter().min()) {
                let offset = mx - mn + 1;
                let mut all = bi.clone();
                for i in 1..amount as i64 {
                    all.extend(bi.iter().map(|x| x + i * offset));
                }
                out.batch_index = Some(all);
            }
        }
        Ok(Outputs::new(vec![latent_value(out)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    #[test]
    fn repeats() {
        let mut l = Latent::new(Array::new(vec![2, 1, 1, 1], vec![1., 2.]).into_tensor().unwrap());
        l.batch_index = Some(vec![3, 4]);
        l.noise_mask = Some(Array::new(vec![2, 1, 1, 1], vec![0.5, 1.0]).into_tensor().unwrap());
        let i = inputs(vec![("samples", comfy_graph::Value::object(l)), ("amount", j(json!(3)))]);
        let o = out_latent(&run(&RepeatLatentBatch, i).unwrap(), 0);
        assert_eq!(Array::from_tensor(&o.samples).unwrap().data, vec![1., 2., 1., 2., 1., 2.]);
        assert_eq!(o.batch_index, Some(vec![3, 4, 5, 6, 7, 8]));
        assert_eq!(Array::from_tensor(o.noise_mask.as_ref().unwrap()).unwrap().shape, vec![6, 1, 1, 1]);
    }
}
