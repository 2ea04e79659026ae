//! Reading IMAGE / MASK / LATENT inputs into working arrays and wrapping results as values.

use candle_core::Tensor;
use comfy_graph::{Inputs, NodeError, Value};

use crate::ops::Array;
use crate::types::Latent;

/// An IMAGE input as an `[B,H,W,C]` array.
pub fn image(inputs: &Inputs, name: &str) -> Result<Array, NodeError> {
    let a = Array::from_tensor(inputs.object::<Tensor>(name)?)?;
    if a.shape.len() != 4 {
        return Err(NodeError::invalid_input(format!(
            "Input '{name}' must be an IMAGE [B, H, W, C], got shape {:?}",
            a.shape
        )));
    }
    Ok(a)
}

/// A MASK input as a `[B,H,W]` array (ComfyUI's `reshape(-1, H, W)`).
pub fn mask(inputs: &Inputs, name: &str) -> Result<Array, NodeError> {
    mask_from(Array::from_tensor(inputs.object::<Tensor>(name)?)?, name)
}

/// Reshapes any `[..., H, W]` array to `[N, H, W]`.
pub fn mask_from(a: Array, name: &str) -> Result<Array, NodeError> {
    let n = a.shape.len();
    if n < 2 {
        return Err(NodeError::invalid_input(format!(
            "Input '{name}' must be a MASK [B, H, W], got shape {:?}",
            a.shape
        )));
    }
    let (h, w) = (a.shape[n - 2], a.shape[n - 1]);
    let b = if h * w == 0 { 0 } else { a.data.len() / (h * w) };
    Ok(Array::new(vec![b, h, w], a.data))
}

/// A LATENT input.
pub fn latent<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a Latent, NodeError> {
    inputs.object::<Latent>(name)
}

/// A non-negative INT widget as `usize`.
pub fn usize_of(inputs: &Inputs, name: &str) -> Result<usize, NodeError> {
    let v = inputs.i64(name)?;
    usize::try_from(v).map_err(|_| NodeError::invalid_input(format!("Input '{name}' must not be negative")))
}

/// Wraps an array as an IMAGE/MASK value (a CPU tensor).
pub fn tensor_value(a: Array) -> Result<Value, NodeError> {
    Ok(Value::object(a.into_tensor()?))
}

/// Wraps a latent as a LATENT value.
pub fn latent_value(l: Latent) -> Value {
    Value::object(l)
}

#[cfg(test)]
pub mod testing {
    //! Helpers for node unit tests: inputs from arrays and a throwaway execution context.

    use super::*;
    use comfy_graph::node::{NoProgress, PreviewMethod};
    use comfy_graph::{CancelToken, ExecContext, Folders, Node, Outputs};
    use serde_json::Value as Json;

    pub fn arr(shape: &[usize], data: &[f32]) -> Array {
        Array::new(shape.to_vec(), data.to_vec())
    }

    pub fn tval(shape: &[usize], data: &[f32]) -> Value {
        Value::object(arr(shape, data).into_tensor().unwrap())
    }

    pub fn lval(shape: &[usize], data: &[f32]) -> Value {
        Value::object(Latent::new(arr(shape, data).into_tensor().unwrap()))
    }

    /// Runs `node` with `inputs` in a context rooted at `folders` (prompt = `prompt`).
    pub fn run_with(
        node: &dyn Node,
        inputs: Inputs,
        folders: &Folders,
        prompt: &Json,
        extra: Option<&Json>,
    ) -> Result<Outputs, NodeError> {
        let cancel = CancelToken::new();
        let ctx = ExecContext {
            prompt_id: "p",
            node_id: "1",
            prompt,
            extra_pnginfo: extra,
            folders,
            cancel: &cancel,
            progress: &NoProgress,
            preview_method: PreviewMethod::None,
        };
        node.execute(&inputs, &ctx)
    }

    /// Runs a node that touches no files.
    pub fn run(node: &dyn Node, inputs: Inputs) -> Result<Outputs, NodeError> {
        let folders = Folders::new("/nonexistent-comfy-test");
        run_with(node, inputs, &folders, &Json::Null, None)
    }

    /// Builds inputs from `(name, value)` pairs; JSON literals become widget values.
    pub fn inputs(pairs: Vec<(&str, Value)>) -> Inputs {
        let mut i = Inputs::new();
        for (k, v) in pairs {
            i.insert(k, v);
        }
        i
    }

    pub fn j(v: Json) -> Value {
        Value::Json(v)
    }

    /// Output `slot` as an array.
    pub fn out(o: &Outputs, slot: usize) -> Array {
        Array::from_tensor(o.values[slot].downcast::<Tensor>().expect("tensor output")).unwrap()
    }

    pub fn out_latent(o: &Outputs, slot: usize) -> Latent {
        o.values[slot].downcast::<Latent>().expect("latent output").clone()
    }

    pub fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
}
