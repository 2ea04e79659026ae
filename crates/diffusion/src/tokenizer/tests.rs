use super::*;
use serde_json::Value;

/// `shared/golden`, from `COMFY_GOLDEN_DIR` or `<workspace>/../shared/golden`; panics when missing.
pub(crate) fn golden_dir() -> PathBuf {
    let dir = std::env::var_os("COMFY_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden")
        });
    assert!(
        dir.is_dir(),
        "golden folder {} is missing (set COMFY_GOLDEN_DIR)",
        dir.display()
    );
    dir
}

fn golden_tokens() -> Value {
    let p = golden_dir().join("tokens.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// Writes `tiny_embed.safetensors` with keys clip_l [2,768] and clip_g [2,1280] whose first
/// elements are the golden ones (the rest of the vectors is not recorded in tokens.json).
fn write_tiny_embed(dir: &Path, cases: &[Value]) {
    let case = cases
        .iter()
        .find(|c| c["name"] == "embedding_present")
        .expect("embedding_present case");
    let firsts = |w: &Value| -> Vec<f32> {
        w[0]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v.is_object())
            .map(|v| v["first"].as_f64().unwrap() as f32)
            .collect()
    };
    let l = firsts(&case["sd1"]["l"]);
    let g = firsts(&case["sdxl"]["g"]);
    assert_eq!((l.len(), g.len()), (2, 2));
    let rows = |first: &[f32], width: usize| -> Vec<u8> {
        let mut v = Vec::new();
        for (r, f) in first.iter().enumerate() {
            for i in 0..width {
                let x = if i == 0 {
                    *f
                } else {
                    (r * width + i) as f32 * 1e-3
                };
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
        v
    };
    crate::checkpoint::tests::write_st(
        &dir.join("tiny_embed.safetensors"),
        &[
            ("clip_g", "F32", vec![2, 1280], rows(&g, 1280)),
            ("clip_l", "F32", vec![2, 768], rows(&l, 768)),
        ],
    );
}

fn compare(case: &str, which: &str, got: &[Window], want: &Value) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{case}/{which}: number of windows");
    for (k, (gw, ww)) in got.iter().zip(want).enumerate() {
        let ids = ww["ids"].as_array().unwrap();
        let weights = ww["weights"].as_array().unwrap();
        let word_ids = ww["word_ids"].as_array().unwrap();
        assert_eq!(gw.len(), MAX_LENGTH);
        assert_eq!(ids.len(), MAX_LENGTH);
        for (j, t) in gw.iter().enumerate() {
            let at = format!("{case}/{which} window {k} pos {j}");
            match (&t.token, &ids[j]) {
                (Token::Id(a), Value::Number(b)) => {
                    assert_eq!(*a as u64, b.as_u64().unwrap(), "{at}")
                }
                (Token::Embedding(v), Value::Object(o)) => {
                    assert_eq!(
                        v.len() as u64,
                        o["embedding_vector"][0].as_u64().unwrap(),
                        "{at}"
                    );
                    assert_eq!(v[0], o["first"].as_f64().unwrap() as f32, "{at}");
                }
                (a, b) => panic!("{at}: got {a:?}, want {b}"),
            }
            assert_eq!(t.weight, weights[j].as_f64().unwrap(), "{at} weight");
            assert_eq!(
                t.word_id as u64,
                word_ids[j].as_u64().unwrap(),
                "{at} word id"
            );
        }
    }
}

#[test]
fn golden_tokens_every_prompt() {
    let g = golden_tokens();
    let cases = g["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 35);
    let dir = tempfile::tempdir().unwrap();
    write_tiny_embed(dir.path(), cases);
    let dirs = Some(vec![dir.path().to_path_buf()]);
    let tok = |pad: u32, key: &str, dirs: Option<Vec<PathBuf>>| SdTokenizer {
        pad_token: pad,
        embedding_key: key.to_string(),
        embedding_dirs: dirs,
    };
    let sd1 = tok(49407, "clip_l", dirs.clone());
    let xl_g = tok(0, "clip_g", dirs.clone());
    let xl_l = tok(49407, "clip_l", dirs.clone());
    let sd1_none = tok(49407, "clip_l", None);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let text = c["text"].as_str().unwrap();
        compare(
            name,
            "sd1.l",
            &sd1.tokenize_with_weights(text),
            &c["sd1"]["l"],
        );
        compare(
            name,
            "sdxl.g",
            &xl_g.tokenize_with_weights(text),
            &c["sdxl"]["g"],
        );
        compare(
            name,
            "sdxl.l",
            &xl_l.tokenize_with_weights(text),
            &c["sdxl"]["l"],
        );
        if let Some(v) = c.get("sd1_embedding_directory_None") {
            compare(
                name,
                "sd1.l(no dir)",
                &sd1_none.tokenize_with_weights(text),
                &v["l"],
            );
        }
        // The bare HF tokenizer on the whole text.
        let mut raw = vec![START_TOKEN];
        raw.extend(encode_text(text));
        raw.push(END_TOKEN);
        let want: Vec<u32> = c["hf_input_ids_raw_text"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(raw, want, "{name}: raw HF ids");
    }
}

#[test]
fn prompt_tokenizer_per_encoder() {
    let cfg = crate::recipe::recipe_config(crate::recipe::Arch::Sdxl, true);
    let tes: Vec<TextEncoderConfig> = cfg.text_encoders.into_iter().map(|(t, _)| t).collect();
    let pt = PromptTokenizer::new(&tes, None);
    let t = pt.tokenize("a cat");
    let l = t.get(ClipKind::L).unwrap();
    let g = t.get(ClipKind::G).unwrap();
    assert_eq!(l[0][3].token, Token::Id(END_TOKEN));
    assert_eq!(l[0][4].token, Token::Id(END_TOKEN));
    assert_eq!(g[0][3].token, Token::Id(END_TOKEN));
    assert_eq!(g[0][4].token, Token::Id(0));
    assert!(t.get(ClipKind::H).is_none());
}

#[test]
fn embedding_names_cannot_escape_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("emb");
    std::fs::create_dir(&inner).unwrap();
    crate::checkpoint::tests::write_st(
        &dir.path().join("outside.safetensors"),
        &[("clip_l", "F32", vec![768], vec![0; 768 * 4])],
    );
    crate::checkpoint::tests::write_st(
        &inner.join("sub_ok.safetensors"),
        &[("clip_l", "F32", vec![768], vec![0; 768 * 4])],
    );
    let dirs = vec![inner.clone()];
    assert!(load_embed("../outside", &dirs, "clip_l").is_none());
    assert!(load_embed("sub_ok", &dirs, "clip_l").is_some());
    // Recursive lookup: a file in a subfolder is found by its bare name.
    let deeper = inner.join("deeper");
    std::fs::create_dir(&deeper).unwrap();
    std::fs::rename(
        inner.join("sub_ok.safetensors"),
        deeper.join("sub_ok.safetensors"),
    )
    .unwrap();
    assert_eq!(load_embed("sub_ok", &dirs, "clip_l").unwrap().len(), 1);
}
