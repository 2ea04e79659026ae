//! Values flowing between nodes.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// One value on a link or a widget.
///
/// Widget constants stay JSON (so the cache signature can compare them); everything a node
/// produces that is not plain data (tensors, models, conditioning) is an opaque shared object.
#[derive(Clone)]
pub enum Value {
    /// A constant from the prompt JSON, or a scalar a node produced (INT, FLOAT, STRING, ...).
    Json(serde_json::Value),
    /// An opaque object (IMAGE, LATENT, MODEL, ...); shared, never copied.
    Object(Arc<dyn Any + Send + Sync>),
    /// Only as a node's return value in an `output_is_list` slot: the per-item values.
    List(Vec<Value>),
    /// An input whose source produced nothing (ComfyUI passes `None`).
    None,
}

impl Value {
    /// Wraps any shareable object.
    pub fn object<T: Any + Send + Sync>(v: T) -> Self {
        Value::Object(Arc::new(v))
    }

    /// The object behind this value if it has type `T`.
    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<&T> {
        match self {
            Value::Object(o) => o.downcast_ref::<T>(),
            _ => None,
        }
    }

    /// The shared handle of the object if it has type `T` (no copy).
    pub fn downcast_arc<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        match self {
            Value::Object(o) => o.clone().downcast::<T>().ok(),
            _ => None,
        }
    }

    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Value::Json(j) => Some(j),
            _ => None,
        }
    }

    /// An integer widget; floats with no fraction are accepted as ComfyUI does.
    pub fn as_i64(&self) -> Option<i64> {
        let j = self.as_json()?;
        j.as_i64().or_else(|| j.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
    }

    /// An unsigned integer widget (seeds go up to 2^64-1).
    pub fn as_u64(&self) -> Option<u64> {
        let j = self.as_json()?;
        j.as_u64().or_else(|| j.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
    }

    pub fn as_f64(&self) -> Option<f64> {
        self.as_json()?.as_f64()
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_json()?.as_str()
    }

    pub fn as_bool(&self) -> Option<bool> {
        self.as_json()?.as_bool()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Json(j) => write!(f, "Json({j})"),
            Value::Object(_) => write!(f, "Object(..)"),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::None => write!(f, "None"),
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(j: serde_json::Value) -> Self {
        Value::Json(j)
    }
}
