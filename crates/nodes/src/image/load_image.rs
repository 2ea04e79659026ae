//! `LoadImage`: an input-folder image as IMAGE `[1,H,W,3]` and its alpha as MASK.

use comfy_graph::{ExecContext, Folders, InputType, Inputs, Node, NodeError, NodeSchema, Outputs, Section};
use serde_json::json;

use crate::ops::decode::{decode, file_sha256, input_path};
use crate::ops::Array;
use crate::values::tensor_value;

/// `LoadImage` (`nodes.py`). Mask = `1 - alpha`, or a 64x64 zero mask without alpha.
pub struct LoadImage;

impl Node for LoadImage {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadImage", "image")
            .display(Some("Load Image"))
            .aliases(&[
                "load image",
                "open image",
                "import image",
                "image input",
                "upload image",
                "read image",
                "image loader",
            ])
            .essentials("Basics")
            .push_input(Section::Required, "image", InputType::InputImages, json!({"image_upload": true}))
            .output("IMAGE")
            .output("MASK")
    }

    fn execute(&self, inputs: &Inputs, ctx: &ExecContext<'_>) -> Result<Outputs, NodeError> {
        let name = inputs.str("image")?;
        let path = input_path(ctx.folders, name, "image")?;
        let bytes =
            std::fs::read(&path).map_err(|e| NodeError::missing_model(format!("Invalid image file: {name} ({e})")))?;
        let d = decode(&bytes)?;
        let (h, w) = (d.height, d.width);
        let mut rgb = Vec::with_capacity(h * w * 3);
        for px in d.rgba.chunks_exact(4) {
            rgb.extend(px[..3].iter().map(|&v| v as f32 / 255.0));
        }
        let mask = if d.alpha_band {
            Array::new(vec![1, h, w], d.rgba.chunks_exact(4).map(|px| 1.0 - px[3] as f32 / 255.0).collect())
        } else {
            Array::full(vec![1, 64, 64], 0.0)
        };
        Ok(Outputs::new(vec![tensor_value(Array::new(vec![1, h, w, 3], rgb))?, tensor_value(mask)?]))
    }

    fn fingerprint(&self, inputs: &Inputs, folders: &Folders) -> Option<String> {
        let name = inputs.str("image").ok()?;
        file_sha256(&folders.annotated_path(name)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::values::testing::*;

    /// Writes a PNG into `dir` (color type and raw bytes).
    pub fn write_png(
        path: &std::path::Path,
        w: u32,
        h: u32,
        ct: png::ColorType,
        data: &[u8],
        trns: Option<&[u8]>,
        palette: Option<&[u8]>,
    ) {
        let f = std::fs::File::create(path).unwrap();
        let mut e = png::Encoder::new(f, w, h);
        e.set_color(ct);
        e.set_depth(png::BitDepth::Eight);
        if let Some(p) = palette {
            e.set_palette(p.to_vec());
        }
        if let Some(t) = trns {
            e.set_trns(t.to_vec());
        }
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }

    #[test]
    fn loads_rgba_png_with_mask_and_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        // 2x3 RGBA.
        let px: Vec<u8> =
            (0..6).flat_map(|i| [i * 40, 255 - i * 40, 7, if i == 0 { 0 } else { 255 - i * 10 }]).collect();
        write_png(&folders.input.join("a.png"), 3, 2, png::ColorType::Rgba, &px, None, None);
        let o =
            run_with(&LoadImage, inputs(vec![("image", j(json!("a.png")))]), &folders, &serde_json::Value::Null, None)
                .unwrap();
        let img = out(&o, 0);
        assert_eq!(img.shape, vec![1, 2, 3, 3]);
        assert_close(&img.data[..6], &[0.0, 1.0, 7.0 / 255.0, 40.0 / 255.0, 215.0 / 255.0, 7.0 / 255.0]);
        let m = out(&o, 1);
        assert_eq!(m.shape, vec![1, 2, 3]);
        assert_close(
            &m.data,
            &[
                1.0,
                1.0 - 245.0 / 255.0,
                1.0 - 235.0 / 255.0,
                1.0 - 225.0 / 255.0,
                1.0 - 215.0 / 255.0,
                1.0 - 205.0 / 255.0,
            ],
        );
        let fp = LoadImage.fingerprint(&inputs(vec![("image", j(json!("a.png")))]), &folders).unwrap();
        use sha2::Digest;
        assert_eq!(fp, hex::encode(sha2::Sha256::digest(std::fs::read(folders.input.join("a.png")).unwrap())));
        // Missing file -> FileNotFoundError-style error.
        let e = run_with(
            &LoadImage,
            inputs(vec![("image", j(json!("nope.png")))]),
            &folders,
            &serde_json::Value::Null,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Invalid image file: nope.png"));
    }

    #[test]
    fn rgb_and_trns_rules() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        // RGB with a tRNS colour key: Pillow sees no alpha band -> 64x64 zero mask.
        write_png(
            &folders.input.join("rgb.png"),
            1,
            1,
            png::ColorType::Rgb,
            &[10, 20, 30],
            Some(&[0, 10, 0, 20, 0, 30]),
            None,
        );
        let o = run_with(
            &LoadImage,
            inputs(vec![("image", j(json!("rgb.png")))]),
            &folders,
            &serde_json::Value::Null,
            None,
        )
        .unwrap();
        assert_close(&out(&o, 0).data, &[10. / 255., 20. / 255., 30. / 255.]);
        let m = out(&o, 1);
        assert_eq!(m.shape, vec![1, 64, 64]);
        assert!(m.data.iter().all(|&v| v == 0.0));
        // Palette with transparency: mask from the palette alpha.
        write_png(
            &folders.input.join("p.png"),
            2,
            1,
            png::ColorType::Indexed,
            &[0, 1],
            Some(&[51]),
            Some(&[255, 0, 0, 0, 255, 0]),
        );
        let o = run_with(
            &LoadImage,
            inputs(vec![("image", j(json!("p.png [input]")))]),
            &folders,
            &serde_json::Value::Null,
            None,
        )
        .unwrap();
        assert_close(&out(&o, 0).data, &[1., 0., 0., 0., 1., 0.]);
        assert_close(&out(&o, 1).data, &[0.8, 0.0]);
    }

    #[test]
    fn sixteen_bit_rgb_keeps_the_high_byte() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path());
        folders.create_all().unwrap();
        let f = std::fs::File::create(folders.input.join("d.png")).unwrap();
        let mut e = png::Encoder::new(f, 1, 1);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Sixteen);
        let mut wr = e.write_header().unwrap();
        // Big-endian samples 0x12ff, 0x8080, 0xffff.
        wr.write_image_data(&[0x12, 0xff, 0x80, 0x80, 0xff, 0xff]).unwrap();
        drop(wr);
        let o =
            run_with(&LoadImage, inputs(vec![("image", j(json!("d.png")))]), &folders, &serde_json::Value::Null, None)
                .unwrap();
        assert_close(&out(&o, 0).data, &[18. / 255., 128. / 255., 1.0]);
    }
}
