//! JSON responses formatted as Python's `json.dumps` does (`", "` / `": "` separators,
//! non-ASCII escaped as `\uXXXX`), so bodies match ComfyUI byte for byte where possible.

use std::io;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

/// serde_json formatter with Python's default separators and ASCII-only output.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut buf = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut buf) {
                    write!(writer, "\\u{:04x}", unit)?;
                }
            }
        }
        Ok(())
    }
}

/// Serialises `value` the way Python's `json.dumps(value)` would.
pub fn to_py_string(value: &Json) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serialising a `serde_json::Value` into a Vec cannot fail.
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return "null".to_string();
    }
    // The formatter only writes ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// A `200`-or-other JSON response with ComfyUI's content type.
pub fn json_response(status: StatusCode, value: &Json) -> Response {
    let mut resp = (status, to_py_string(value)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// `200` with a JSON body.
pub fn ok(value: &Json) -> Response {
    json_response(StatusCode::OK, value)
}

/// A response with a status and an empty body (aiohttp's bare `web.Response(status=...)`).
pub fn empty(status: StatusCode) -> Response {
    status.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_separators_and_ascii_escapes() {
        let v = json!({"a": [1, 2.5, "é😀"], "b": {"c": null}});
        assert_eq!(
            to_py_string(&v),
            r#"{"a": [1, 2.5, "\u00e9\ud83d\ude00"], "b": {"c": null}}"#
        );
    }

    #[test]
    fn integral_floats_keep_their_point() {
        assert_eq!(
            to_py_string(&json!({"max_upload_size": 104857600.0})),
            r#"{"max_upload_size": 104857600.0}"#
        );
    }
}
