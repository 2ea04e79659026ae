//! Python-style text of JSON values (`str()` / `repr()`), and Python's conversions
//! `int()`, `float()`, `str()`, `bool()`, `==`.
//!
//! ComfyUI builds its validation messages with Python formatting (`Value 0 smaller than min
//! of 1`, `'eulerx' not in ['euler', 'heun']`), so the engine reproduces it exactly.

use serde_json::{Number, Value as Json};

/// Python's `repr(float)`: shortest round-trip digits, exponent form outside `1e-4..1e16`.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-5".
    let s = format!("{x:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits.clone() };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        format!("{sign}0.{}{}", "0".repeat((-point) as usize), digits)
    } else if (point as usize) >= digits.len() {
        format!("{sign}{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        let p = point as usize;
        format!("{sign}{}.{}", &digits[..p], &digits[p..])
    }
}

fn number_repr(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Python's `repr(str)`.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (0x80..0xa0).contains(&(c as u32)) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of the value a JSON document decodes to.
pub fn py_repr(v: &Json) -> String {
    match v {
        Json::Null => "None".into(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Number(n) => number_repr(n),
        Json::String(s) => str_repr(s),
        Json::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Json::Object(o) => format!(
            "{{{}}}",
            o.iter().map(|(k, v)| format!("{}: {}", str_repr(k), py_repr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Python's `str()`: strings verbatim, everything else as `repr()`.
pub fn py_str(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's type name of a decoded JSON value (for `TypeError` texts).
pub fn py_type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "NoneType",
        Json::Bool(_) => "bool",
        Json::Number(n) if n.is_f64() => "float",
        Json::Number(_) => "int",
        Json::String(_) => "str",
        Json::Array(_) => "list",
        Json::Object(_) => "dict",
    }
}

/// A number as JSON, integral when it fits.
fn int_json(i: i128) -> Json {
    if let Ok(v) = i64::try_from(i) {
        Json::from(v)
    } else if let Ok(v) = u64::try_from(i) {
        Json::from(v)
    } else {
        float_json(i as f64)
    }
}

/// A float as JSON; non-finite values have no JSON form and become `null`.
fn float_json(f: f64) -> Json {
    Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
}

/// Removes Python's digit-group underscores (`1_000`); `None` if they are misplaced.
fn strip_underscores(s: &str) -> Option<String> {
    if !s.contains('_') {
        return Some(s.to_string());
    }
    let b: Vec<char> = s.chars().collect();
    for (i, c) in b.iter().enumerate() {
        if *c == '_' {
            let ok = i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit();
            if !ok {
                return None;
            }
        }
    }
    Some(s.replace('_', ""))
}

/// Python's `int(v)`; `Err` holds the exception text.
pub fn py_int(v: &Json) -> Result<Json, String> {
    match v {
        Json::Bool(b) => Ok(Json::from(*b as i64)),
        Json::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_nan() {
                    return Err("cannot convert float NaN to integer".into());
                }
                if f.is_infinite() {
                    return Err("cannot convert float infinity to integer".into());
                }
                Ok(int_json(f.trunc() as i128))
            } else {
                Ok(v.clone())
            }
        }
        Json::String(s) => {
            let bad = || format!("invalid literal for int() with base 10: {}", str_repr(s));
            let t = strip_underscores(s.trim()).ok_or_else(bad)?;
            let body = t.strip_prefix(['+', '-']).unwrap_or(&t);
            if body.is_empty() || !body.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            match t.parse::<i128>() {
                Ok(i) => Ok(int_json(i)),
                Err(_) => t.parse::<f64>().map(float_json).map_err(|_| bad()),
            }
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            py_type_name(other)
        )),
    }
}

/// Python's `float(v)`; `Err` holds the exception text. NaN/inf strings keep their
/// original text (JSON cannot hold them).
pub fn py_float(v: &Json) -> Result<Json, String> {
    match v {
        Json::Bool(b) => Ok(float_json(if *b { 1.0 } else { 0.0 })),
        Json::Number(n) => Ok(float_json(n.as_f64().unwrap_or(f64::NAN))),
        Json::String(s) => {
            let bad = || format!("could not convert string to float: {}", str_repr(s));
            let t = strip_underscores(s.trim()).ok_or_else(bad)?;
            let lower = t.to_ascii_lowercase();
            let body = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
            if matches!(body, "inf" | "infinity" | "nan") {
                return Ok(v.clone());
            }
            if body.is_empty() || !body.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-')) {
                return Err(bad());
            }
            match t.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(float_json(f)),
                Ok(_) => Ok(v.clone()),
                Err(_) => Err(bad()),
            }
        }
        other => Err(format!("float() argument must be a string or a real number, not '{}'", py_type_name(other))),
    }
}

/// Python's `bool(v)` (every non-empty string is true).
pub fn py_bool(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().map(|f| f != 0.0).unwrap_or(true),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

/// A number (bools count as 0/1, as in Python) for comparisons.
fn py_num(v: &Json) -> Option<f64> {
    match v {
        Json::Bool(b) => Some(*b as i64 as f64),
        Json::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn py_int_exact(v: &Json) -> Option<i128> {
    match v {
        Json::Bool(b) => Some(*b as i128),
        Json::Number(n) if !n.is_f64() => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

/// Python's `a < b` for numbers; `None` when either side is not a number.
pub fn py_lt(a: &Json, b: &Json) -> Option<bool> {
    if let (Some(x), Some(y)) = (py_int_exact(a), py_int_exact(b)) {
        return Some(x < y);
    }
    Some(py_num(a)? < py_num(b)?)
}

/// Python's `a == b` on decoded JSON (`1 == 1.0 == True`).
pub fn py_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Null, Json::Null) => true,
        (Json::String(x), Json::String(y)) => x == y,
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        (Json::Bool(_) | Json::Number(_), Json::Bool(_) | Json::Number(_)) => {
            if let (Some(x), Some(y)) = (py_int_exact(a), py_int_exact(b)) {
                x == y
            } else {
                matches!((py_num(a), py_num(b)), (Some(x), Some(y)) if x == y)
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_python() {
        assert_eq!(float_repr(1.0), "1.0");
        assert_eq!(float_repr(8.0), "8.0");
        assert_eq!(float_repr(0.1), "0.1");
        assert_eq!(float_repr(1.5), "1.5");
        assert_eq!(float_repr(-2.25), "-2.25");
        assert_eq!(float_repr(1e-5), "1e-05");
        assert_eq!(float_repr(0.0001), "0.0001");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(1e15), "1000000000000000.0");
        assert_eq!(float_repr(1.2345e20), "1.2345e+20");
        assert_eq!(float_repr(123.456), "123.456");
    }

    #[test]
    fn repr_of_containers() {
        let v = json!(["euler", 1, 2.5, null, true, {"a": "it's"}]);
        assert_eq!(py_repr(&v), "['euler', 1, 2.5, None, True, {'a': \"it's\"}]");
        assert_eq!(py_str(&json!("x")), "x");
    }

    #[test]
    fn conversions() {
        assert_eq!(py_int(&json!("12")).unwrap(), json!(12));
        assert_eq!(py_int(&json!(" 7 ")).unwrap(), json!(7));
        assert_eq!(py_int(&json!(3.9)).unwrap(), json!(3));
        assert_eq!(py_int(&json!(-3.9)).unwrap(), json!(-3));
        assert_eq!(py_int(&json!(true)).unwrap(), json!(1));
        assert_eq!(py_int(&json!("1.5")).unwrap_err(), "invalid literal for int() with base 10: '1.5'");
        assert!(py_int(&json!(null)).unwrap_err().ends_with("not 'NoneType'"));
        assert_eq!(py_float(&json!(5)).unwrap(), json!(5.0));
        assert_eq!(py_float(&json!("1e3")).unwrap(), json!(1000.0));
        assert_eq!(py_float(&json!("abc")).unwrap_err(), "could not convert string to float: 'abc'");
        assert!(py_bool(&json!("false")));
        assert!(!py_bool(&json!("")));
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert_eq!(py_lt(&json!(0), &json!(1)), Some(true));
        assert_eq!(py_lt(&json!(-1.0), &json!(0.0)), Some(true));
    }
}
