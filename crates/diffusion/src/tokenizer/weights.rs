//! ComfyUI's prompt weighting syntax (`sd1_clip.token_weights`): `(text)` ×1.1 per nesting
//! level, `(text:1.3)` absolute weight, `\(` `\)` literal parentheses, brackets are plain text.

/// Protects escaped parentheses (`escape_important`): `\)` → `\0\1`, `\(` → `\0\2`.
pub fn escape_important(text: &str) -> String {
    text.replace("\\)", "\0\u{1}").replace("\\(", "\0\u{2}")
}

/// Restores protected parentheses (`unescape_important`).
pub fn unescape_important(text: &str) -> String {
    text.replace("\0\u{1}", ")").replace("\0\u{2}", "(")
}

/// Top-level split into plain runs and `( … )` groups (`parse_parentheses`), unbalanced
/// parentheses behaving exactly as in ComfyUI.
fn parse_parentheses(s: &str) -> Vec<String> {
    let mut result = Vec::new();
    let mut current = String::new();
    let mut nesting: i64 = 0;
    for c in s.chars() {
        match c {
            '(' => {
                if nesting == 0 {
                    if !current.is_empty() {
                        result.push(std::mem::take(&mut current));
                    }
                    current.push('(');
                } else {
                    current.push(c);
                }
                nesting += 1;
            }
            ')' => {
                nesting -= 1;
                if nesting == 0 {
                    current.push(')');
                    result.push(std::mem::take(&mut current));
                } else {
                    current.push(c);
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        result.push(current);
    }
    result
}

/// Python `float(s)`: surrounding whitespace allowed, `_` only between digits, `inf`/`nan`.
pub fn python_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let cleaned = if t.contains('_') {
        let b: Vec<char> = t.chars().collect();
        for (i, &c) in b.iter().enumerate() {
            if c == '_' {
                let ok = i > 0
                    && i + 1 < b.len()
                    && b[i - 1].is_ascii_digit()
                    && b[i + 1].is_ascii_digit();
                if !ok {
                    return None;
                }
            }
        }
        t.replace('_', "")
    } else {
        t.to_string()
    };
    let lower = cleaned.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if lower.len() - body.len() > 1 {
        return None;
    }
    let neg = lower.starts_with('-');
    let special = match body {
        "inf" | "infinity" => Some(f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    };
    if let Some(v) = special {
        return Some(if neg { -v } else { v });
    }
    // Rust accepts the same decimal/exponent grammar, but not e.g. hex; reject letters other
    // than the exponent marker so "1f" etc. fail as in Python.
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || c == '.' || c == 'e' || c == '+' || c == '-')
    {
        return None;
    }
    lower.parse::<f64>().ok()
}

/// `token_weights(string, current_weight)`: the prompt as `(segment, weight)` pairs.
pub fn token_weights(s: &str, current_weight: f64) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for x in parse_parentheses(s) {
        let n = x.chars().count();
        if n >= 2 && x.starts_with('(') && x.ends_with(')') {
            let inner = &x[1..x.len() - 1];
            let mut weight = current_weight * 1.1;
            let mut text = inner;
            if let Some(xx) = inner.rfind(':') {
                if xx > 0 {
                    if let Some(w) = python_float(&inner[xx + 1..]) {
                        weight = w;
                        text = &inner[..xx];
                    }
                }
            }
            out.extend(token_weights(text, weight));
        } else {
            out.push((x, current_weight));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!(
            token_weights("((a))", 1.0),
            vec![("a".to_string(), 1.1 * 1.1)]
        );
        assert_eq!(token_weights("((a))", 1.0)[0].1, 1.2100000000000002);
        assert_eq!(token_weights("(a:1.5)", 1.0), vec![("a".to_string(), 1.5)]);
        assert_eq!(
            token_weights("((a:1.5))", 1.0),
            vec![("a".to_string(), 1.5)]
        );
        assert_eq!(token_weights("(a:0)", 1.0), vec![("a".to_string(), 0.0)]);
        assert_eq!(
            token_weights("(a:abc)", 1.0),
            vec![("a:abc".to_string(), 1.1)]
        );
        assert_eq!(
            token_weights("x (y) z", 1.0),
            vec![
                ("x ".to_string(), 1.0),
                ("y".to_string(), 1.1),
                (" z".to_string(), 1.0)
            ]
        );
        assert_eq!(
            token_weights("(open", 1.0),
            vec![("(open".to_string(), 1.0)]
        );
        assert_eq!(token_weights("a) b", 1.0), vec![("a) b".to_string(), 1.0)]);
        assert_eq!(token_weights("()", 1.0), vec![]);
    }

    #[test]
    fn floats() {
        assert_eq!(python_float(" 1.5 "), Some(1.5));
        assert_eq!(python_float("1_0"), Some(10.0));
        assert_eq!(python_float("_1"), None);
        assert_eq!(python_float("1e2"), Some(100.0));
        assert_eq!(python_float(".5"), Some(0.5));
        assert_eq!(python_float("abc"), None);
        assert_eq!(python_float(""), None);
        assert_eq!(python_float("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(python_float("0x10"), None);
    }
}
