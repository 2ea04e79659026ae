//! `MaskComposite`: combines a source mask into a destination mask at an offset.

use comfy_graph::{ExecContext, Inputs, Node, NodeError, NodeSchema, Outputs};
use serde_json::json;

use comfy_graph::{InputType, Section};

use crate::values::{mask, tensor_value, usize_of};

/// `MaskComposite` (`comfy_extras.nodes_mask`, V3). Boolean ops work on rounded values.
pub struct MaskComposite;

const OPS: [&str; 6] = ["multiply", "add", "subtract", "and", "or", "xor"];

impl Node for MaskComposite {
    fn schema(&self) -> NodeSchema {
        let pos = || json!({"default": 0, "min": 0, "max": 16384, "step": 1});
        super::v3(
            "MaskComposite",
            "Combine Masks",
            Some(&["combine masks", "blend masks", "layer masks", "masks composition"]),
        )
        .required("destination", "MASK", json!({}))
        .required("source", "MASK", json!({}))
        .required("x", "INT", pos())
        .required("y", "INT", pos())
        .push_input(
            Section::Required,
            "operation",
            InputType::ComboV3(OPS.iter().map(|o| json!(o)).collect()),
            json!({}),
        )
        .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, _ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let mut dst = mask(inputs, "destination")?;
        let src = mask(inputs, "source")?;
        let (x, y) = (usize_of(inputs, "x")?, usize_of(inputs, "y")?);
        let op = inputs.str("operation")?;
        let f: fn(f32, f32) -> f32 = match op {
            "multiply" => |a, b| a * b,
            "add" => |a, b| a + b,
            "subtract" => |a, b| a - b,
            "and" => |a, b| ((a.round_ties_even() != 0.0) & (b.round_ties_even() != 0.0)) as u8 as f32,
            "or" => |a, b| ((a.round_ties_even() != 0.0) | (b.round_ties_even() != 0.0)) as u8 as f32,
            "xor" => |a, b| ((a.round_ties_even() != 0.0) ^ (b.round_ties_even() != 0.0)) as u8 as f32,
            other => return Err(NodeError::invalid_input(format!("Unknown operation: {other}"))),
        };
        let (db, dh, dw) = dst.dims3();
        let (sb, sh, sw) = src.dims3();
        if sb != db && sb != 1 {
            return Err(NodeError::invalid_input(format!(
                "The size of tensor a ({db}) must match the size of tensor b ({sb}) at non-singleton dimension 0"
            )));
        }
        let right = (x + sw).min(dw);
        let bottom = (y + sh).min(dh);
        for b in 0..db {
            let bs = if sb == 1 { 0 } else { b };
            for yy in y..bottom.max(y) {
                for xx in x..right.max(x) {
                    let di = (b * dh + yy) * dw + xx;
                    let sv = src.data[(bs * sh + yy - y) * sw + xx - x];
                    dst.data[di] = f(dst.data[di], sv);
                }
            }
        }
        Ok(Outputs::new(vec![tensor_value(dst.map(|v| v.clamp(0.0, 1.0)))?]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::testing::*;

    fn comp(op: &str, x: i64, y: i64) -> Vec<f32> {
        let i = inputs(vec![
            ("destination", tval(&[1, 2, 3], &[0.5, 0.5, 0.5, 0.2, 0.8, 1.0])),
            ("source", tval(&[1, 1, 2], &[0.6, 0.4])),
            ("x", j(json!(x))),
            ("y", j(json!(y))),
            ("operation", j(json!(op))),
        ]);
        out(&run(&MaskComposite, i).unwrap(), 0).data
    }

    #[test]
    fn operations() {
        assert_close(&comp("multiply", 0, 0), &[0.3, 0.2, 0.5, 0.2, 0.8, 1.0]);
        assert_close(&comp("add", 2, 1), &[0.5, 0.5, 0.5, 0.2, 0.8, 1.0]);
        assert_close(&comp("add", 1, 1), &[0.5, 0.5, 0.5, 0.2, 1.0, 1.0]);
        assert_close(&comp("subtract", 1, 0), &[0.5, 0.0, 0.1, 0.2, 0.8, 1.0]);
        // round(0.5) = 0 (half to even): and(0,1)=0, and(0,0)=0
        assert_close(&comp("and", 0, 0), &[0.0, 0.0, 0.5, 0.2, 0.8, 1.0]);
        assert_close(&comp("or", 0, 0), &[1.0, 0.0, 0.5, 0.2, 0.8, 1.0]);
        assert_close(&comp("xor", 0, 1), &[0.5, 0.5, 0.5, 1.0, 1.0, 1.0]);
        // Outside the destination: unchanged.
        assert_close(&comp("add", 3, 0), &[0.5, 0.5, 0.5, 0.2, 0.8, 1.0]);
    }
}
