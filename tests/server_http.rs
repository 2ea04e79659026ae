//! End-to-end tests of the HTTP routes against the real `comfy-rs` binary.

mod server_support;

use serde_json::{json, Value as Json};
use server_support::{blur_graph, slow_graph, tiny_png, wait_until, Server};

const MODEL_KEYS: [&str; 20] = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

fn safetensors_with_metadata(meta: &Json) -> Vec<u8> {
    let header =
        json!({"__metadata__": meta, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
            .to_string();
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0; 4]);
    b
}

#[test]
fn info_routes_and_api_prefix() {
    let base = tempfile::tempdir().unwrap();
    let emb = base.path().join("models/embeddings/sub");
    std::fs::create_dir_all(&emb).unwrap();
    std::fs::write(
        base.path()
            .join("models/embeddings/EasyNegative.safetensors"),
        b"x",
    )
    .unwrap();
    std::fs::write(emb.join("foo.pt"), b"x").unwrap();
    std::fs::write(emb.join("notes.txt"), b"x").unwrap();
    let ck = base.path().join("models/checkpoints");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(
        ck.join("m.safetensors"),
        safetensors_with_metadata(&json!({"ss_name": "demo"})),
    )
    .unwrap();
    let web = base.path().join("web");
    std::fs::create_dir_all(web.join("extensions/core")).unwrap();
    std::fs::write(web.join("extensions/core/a.js"), b"//").unwrap();
    std::fs::write(web.join("index.html"), b"<html>frontend</html>").unwrap();
    let web_arg = web.to_string_lossy().to_string();
    let s = Server::start_in(base, &["--front-end-root", &web_arg]);

    for prefix in ["", "/api"] {
        let r = s.get(&format!("{prefix}/system_stats"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        let v = r.json();
        assert!(v["system"]["ram_total"].as_u64().unwrap() > 0);
        assert!(v["system"]["ram_free"].as_u64().unwrap() > 0);
        assert_eq!(v["system"]["os"], "posix");
        assert!(v["system"]["python_version"]
            .as_str()
            .unwrap()
            .contains("comfy-rs"));
        assert!(v["system"]["pytorch_version"]
            .as_str()
            .unwrap()
            .contains("comfy-rs"));
        assert_eq!(v["system"]["embedded_python"], false);
        assert!(v["system"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--front-end-root"));
        assert_eq!(v["devices"][0]["type"], "cpu");

        let f = s.get(&format!("{prefix}/features"));
        assert_eq!(
            f.text(),
            r#"{"supports_preview_metadata": true, "max_upload_size": 104857600.0}"#
        );

        assert_eq!(
            s.get(&format!("{prefix}/embeddings")).json(),
            json!(["EasyNegative", "sub/foo"])
        );
        let keys: Vec<Json> = MODEL_KEYS.iter().map(|k| json!(k)).collect();
        assert_eq!(s.get(&format!("{prefix}/models")).json(), Json::Array(keys));
        assert_eq!(
            s.get(&format!("{prefix}/models/checkpoints")).json(),
            json!(["m.safetensors"])
        );
        assert_eq!(s.get(&format!("{prefix}/models/clip")).status, 404);
        assert_eq!(s.get(&format!("{prefix}/models/nope")).status, 404);
        assert_eq!(
            s.get(&format!("{prefix}/extensions")).json(),
            json!(["/extensions/core/a.js"])
        );

        let oi = s.get(&format!("{prefix}/object_info")).json();
        for class in [
            "EmptyImage",
            "ImageBlur",
            "SaveImage",
            "PreviewImage",
            "LoadImage",
        ] {
            assert_eq!(
                oi[class]["name"], class,
                "{class} missing from /object_info"
            );
        }
        assert_eq!(oi["SaveImage"]["output_node"], true);
        assert_eq!(
            oi["SaveImage"]["input"]["hidden"],
            json!({"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"})
        );
        let one = s.get(&format!("{prefix}/object_info/SaveImage")).json();
        assert_eq!(one["SaveImage"], oi["SaveImage"]);
        assert_eq!(
            s.get(&format!("{prefix}/object_info/NoSuchNode")).json(),
            json!({})
        );

        let md = s.get(&format!(
            "{prefix}/view_metadata/checkpoints?filename=m.safetensors"
        ));
        assert_eq!(md.status, 200);
        assert_eq!(md.json(), json!({"ss_name": "demo"}));
        assert_eq!(
            s.get(&format!("{prefix}/view_metadata/checkpoints")).status,
            404
        );
        assert_eq!(
            s.get(&format!(
                "{prefix}/view_metadata/checkpoints?filename=x.ckpt"
            ))
            .status,
            404
        );
        assert_eq!(
            s.get(&format!(
                "{prefix}/view_metadata/checkpoints?filename=../../etc/x.safetensors"
            ))
            .status,
            404
        );
        assert_eq!(
            s.get(&format!(
                "{prefix}/view_metadata/nope?filename=m.safetensors"
            ))
            .status,
            404
        );

        assert_eq!(
            s.get(&format!("{prefix}/prompt")).json(),
            json!({"exec_info": {"queue_remaining": 0}})
        );
        assert_eq!(
            s.get(&format!("{prefix}/queue")).json(),
            json!({"queue_running": [], "queue_pending": []})
        );
    }
    let index = s.get("/");
    assert_eq!(index.status, 200);
    assert_eq!(index.text(), "<html>frontend</html>");
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    assert_eq!(
        s.get("/extensions/core/a.js").header("cache-control"),
        Some("no-cache")
    );
    assert_eq!(s.get("/no/such/file.png").status, 404);
}

#[test]
fn validation_errors_are_comfyui_400_bodies() {
    let s = Server::start(&[]);
    let r = s.post_json("/prompt", &json!({"client_id": "x"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "no_prompt");
    assert_eq!(r.json()["node_errors"], json!({}));

    let r = s.post_json(
        "/api/prompt",
        &json!({"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_prompt");
    assert_eq!(
        r.json()["error"]["message"],
        "Cannot execute because node Nope does not exist."
    );
    assert_eq!(r.json()["error"]["details"], "Node ID '#1'");

    let r = s.post_json("/prompt", &json!({"prompt": {"1": {"inputs": {}}}}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_prompt");

    let r = s.post_json("/prompt", &json!({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "prompt_no_outputs");

    let mut g = blur_graph("bad", 8);
    g["1"]["inputs"]["width"] = json!(0);
    let r = s.post_json("/prompt", &json!({"prompt": g}));
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["type"], "prompt_outputs_failed_validation");
    let e = &v["node_errors"]["1"];
    assert_eq!(e["class_type"], "EmptyImage");
    assert_eq!(e["errors"][0]["type"], "value_smaller_than_min");
    assert_eq!(e["errors"][0]["message"], "Value 0 smaller than min of 1");
    assert_eq!(e["errors"][0]["extra_info"]["input_name"], "width");
    assert_eq!(e["dependent_outputs"], json!(["3"]));

    // Malformed JSON: 400 with ComfyUI's error shape, on every JSON route.
    for path in ["/prompt", "/api/prompt", "/queue", "/history", "/free"] {
        let r = s.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            b"{not json",
        );
        assert_eq!(r.status, 400, "{path}");
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_json", "{path}");
        assert!(v["error"]["message"].is_string() && v["error"]["details"].is_string());
        assert_eq!(v["node_errors"], json!({}));
    }
    // /interrupt treats a bad body as {}.
    assert_eq!(s.request("POST", "/interrupt", &[], b"garbage").status, 200);
    // Nothing above was queued.
    assert_eq!(
        s.get("/prompt").json(),
        json!({"exec_info": {"queue_remaining": 0}})
    );
}

#[test]
fn run_history_view_and_cache() {
    let s = Server::start(&[]);
    let id = s.submit(&blur_graph("flow", 40), None);
    let entry = s.wait_history(&id);
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["status"]["completed"], true);
    assert_eq!(entry["prompt"][1], id.as_str());
    assert_eq!(entry["prompt"][4], json!(["3"]));
    let img = &entry["outputs"]["3"]["images"][0];
    assert_eq!(
        img,
        &json!({"filename": "flow_00001_.png", "subfolder": "", "type": "output"})
    );
    assert_eq!(entry["meta"]["3"]["node_id"], "3");
    let kinds: Vec<&str> = entry["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["execution_start", "execution_cached", "execution_success"]
    );
    assert!(s.path("output/flow_00001_.png").is_file());

    // /view: as-is, previews and channels.
    let v = s.get("/view?filename=flow_00001_.png&type=output&subfolder=");
    assert_eq!(v.status, 200);
    assert_eq!(v.header("content-type"), Some("image/png"));
    assert_eq!(
        v.header("content-disposition"),
        Some("filename=\"flow_00001_.png\"")
    );
    assert!(v.body.starts_with(b"\x89PNG"));
    assert_eq!(
        v.body,
        std::fs::read(s.path("output/flow_00001_.png")).unwrap()
    );
    let ranged = s.request(
        "GET",
        "/view?filename=flow_00001_.png",
        &[("Range", "bytes=0-7")],
        b"",
    );
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, b"\x89PNG\r\n\x1a\n");
    let p = s.get("/api/view?filename=flow_00001_.png&preview=jpeg;50");
    assert_eq!(p.header("content-type"), Some("image/jpeg"));
    assert!(p.body.starts_with(&[0xff, 0xd8]));
    // WebP previews (the default format; also forced by an alpha channel request).
    for q in ["preview=webp;90", "preview=png", "preview=jpeg;50&channel=rgba"] {
        let w = s.get(&format!("/view?filename=flow_00001_.png&{q}"));
        assert_eq!(w.status, 200, "{q}");
        assert_eq!(w.header("content-type"), Some("image/webp"), "{q}");
        assert!(w.body.starts_with(b"RIFF") && &w.body[8..12] == b"WEBP", "{q}");
    }
    let a = s.get(
        "/view?filename=flow_00001_.png [output]&channel=a"
            .replace(' ', "%20")
            .as_str(),
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("image/png"));
    assert_eq!(
        s.get("/view?filename=flow_00001_.png&channel=rgb")
            .header("content-type"),
        Some("image/png")
    );

    // The identical prompt again: everything cached, same output reported.
    let id2 = s.submit(&blur_graph("flow", 40), None);
    let e2 = s.wait_history(&id2);
    assert_eq!(e2["status"]["status_str"], "success");
    let cached = e2["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m[0] == "execution_cached")
        .unwrap()
        .clone();
    let mut nodes: Vec<String> = cached[1]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["1", "2", "3"]);
    assert_eq!(e2["outputs"]["3"], entry["outputs"]["3"]);
    assert!(!s.path("output/flow_00002_.png").exists());

    // History listing, paging, delete, clear.
    let all = s.get("/history").json();
    assert_eq!(
        all.as_object().unwrap().keys().collect::<Vec<_>>(),
        [&id, &id2]
    );
    let last = s.get("/history?max_items=1").json();
    assert_eq!(last.as_object().unwrap().keys().collect::<Vec<_>>(), [&id2]);
    let first = s.get("/api/history?max_items=1&offset=0").json();
    assert_eq!(first.as_object().unwrap().keys().collect::<Vec<_>>(), [&id]);
    assert_eq!(s.get("/history?max_items=abc").status, 400);
    assert_eq!(s.get("/history/unknown-id").json(), json!({}));
    assert_eq!(
        s.post_json("/history", &json!({"delete": [id.clone()]}))
            .status,
        200
    );
    assert_eq!(s.get(&format!("/history/{id}")).json(), json!({}));
    assert_eq!(
        s.post_json("/api/history", &json!({"clear": true})).status,
        200
    );
    assert_eq!(s.get("/history").json(), json!({}));

    // Jobs API.
    let id3 = s.submit(&blur_graph("jobs", 16), None);
    s.wait_history(&id3);
    let jobs = s.get("/api/jobs").json();
    assert_eq!(jobs["jobs"][0]["id"], id3.as_str());
    assert_eq!(jobs["jobs"][0]["status"], "completed");
    assert_eq!(jobs["pagination"]["total"], 1);
    let job = s.get(&format!("/api/jobs/{id3}"));
    assert_eq!(job.status, 200);
    assert!(job.json()["outputs"]["3"].is_object());
    assert_eq!(s.get("/api/jobs/nope").status, 404);
    let bad = s.get("/api/jobs?status=bogus");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Invalid status value(s)"));
    assert_eq!(s.get("/api/jobs?limit=0").status, 400);
    assert_eq!(
        s.request("POST", &format!("/api/jobs/{id3}/cancel"), &[], b"")
            .status,
        409
    );
    assert_eq!(
        s.post_json(
            "/free",
            &json!({"unload_models": true, "free_memory": true})
        )
        .status,
        200
    );
}

#[test]
fn queue_delete_clear_cancel_and_interrupt() {
    let s = Server::start(&[]);
    let a = s.submit(&slow_graph("slow_a", 40), None);
    wait_until("A running", || {
        s.get("/queue").json()["queue_running"]
            .as_array()
            .map(|r| r.len())
            == Some(1)
    });
    let b = s.submit(&blur_graph("b", 16), None);
    let c = s.submit(&blur_graph("c", 24), None);
    let d = s.submit(&blur_graph("d", 32), None);
    let q = s.get("/queue").json();
    assert_eq!(q["queue_running"][0][1], a.as_str());
    assert_eq!(q["queue_running"][0].as_array().unwrap().len(), 5);
    let pending: Vec<&str> = q["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[1].as_str().unwrap())
        .collect();
    assert_eq!(pending.len(), 3);
    assert_eq!(s.get("/prompt").json()["exec_info"]["queue_remaining"], 4);
    assert_eq!(
        s.get("/api/jobs?status=in_progress").json()["jobs"][0]["id"],
        a.as_str()
    );

    assert_eq!(
        s.post_json("/queue", &json!({"delete": [c.clone()]}))
            .status,
        200
    );
    let pending = s.get("/queue").json()["queue_pending"].clone();
    assert_eq!(pending.as_array().unwrap().len(), 2);
    assert!(pending
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i[1] != c.as_str()));

    // Job cancel of a pending job removes it.
    let r = s.request("POST", &format!("/api/jobs/{d}/cancel"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(s.get(&format!("/api/jobs/{d}")).status, 404);
    assert_eq!(s.get("/api/jobs/nope/cancel").status, 405);

    assert_eq!(
        s.post_json("/api/queue", &json!({"clear": true})).status,
        200
    );
    assert_eq!(s.get("/queue").json()["queue_pending"], json!([]));

    // An interrupt aimed at another prompt does nothing; a plain one stops A.
    assert_eq!(
        s.post_json("/interrupt", &json!({"prompt_id": b})).status,
        200
    );
    assert_eq!(s.get("/queue").json()["queue_running"][0][1], a.as_str());
    assert_eq!(s.post_json("/interrupt", &json!({})).status, 200);
    let e = s.wait_history(&a);
    assert_eq!(e["status"]["status_str"], "error");
    assert_eq!(e["status"]["completed"], false);
    let kinds: Vec<&str> = e["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"execution_interrupted"));
    assert_eq!(s.get(&format!("/history/{b}")).json(), json!({}));
    wait_until("idle", || {
        s.get("/prompt").json()["exec_info"]["queue_remaining"] == 0
    });
    // The server keeps working after an interrupt.
    let ok = s.submit(&blur_graph("after", 8), None);
    assert_eq!(s.wait_history(&ok)["status"]["status_str"], "success");
}

#[test]
fn path_safety_rules() {
    let base = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
    std::fs::create_dir_all(base.path().join("output/sub")).unwrap();
    std::fs::write(base.path().join("output/sub/ok.png"), tiny_png(2, 2, 255)).unwrap();
    std::fs::write(
        base.path().join("output/page.html"),
        b"<script>alert(1)</script>",
    )
    .unwrap();
    std::fs::write(
        base.path().join("output/pic.svg"),
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    )
    .unwrap();
    std::fs::write(base.path().join("output/data.xml"), b"<a/>").unwrap();
    std::fs::write(base.path().join("output/app.js"), b"alert(1)").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        base.path().join("output/link.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), base.path().join("output/linkdir")).unwrap();
    std::fs::write(base.path().join("secret_in_base.txt"), b"secret").unwrap();
    let s = Server::start_in(base, &[]);

    // Only the basename of `filename` counts (ComfyUI): `sub/ok.png` looks for `output/ok.png`.
    assert_eq!(s.get("/view?filename=sub/ok.png").status, 404);
    assert_eq!(s.get("/view?filename=ok.png&subfolder=sub").status, 200);
    for (target, code) in [
        ("/view", 404),
        ("/view?filename=", 400),
        ("/view?filename=../secret_in_base.txt", 400),
        ("/view?filename=..%2Fsecret_in_base.txt", 400),
        ("/view?filename=%2e%2e%2fsecret_in_base.txt", 400),
        ("/view?filename=%2Fetc%2Fpasswd", 400),
        ("/view?filename=/etc/passwd", 400),
        ("/view?filename=secret_in_base.txt&subfolder=..", 403),
        ("/view?filename=secret_in_base.txt&subfolder=%2e%2e", 403),
        ("/view?filename=passwd&subfolder=/etc", 403),
        ("/view?filename=passwd&subfolder=%2Fetc", 403),
        ("/view?filename=x&subfolder=sub/../../", 403),
        ("/view?filename=ok.png&type=secret", 400),
        ("/view?filename=missing.png", 404),
        ("/view?filename=link.txt", 403),
        ("/view?filename=secret.txt&subfolder=linkdir", 403),
        ("/view?filename=ok.png%00.txt&subfolder=sub", 400),
        ("/api/view?filename=..%5C..%5Csecret_in_base.txt", 400),
    ] {
        let r = s.get(target);
        assert_eq!(r.status, code, "{target}: {}", r.text());
        assert!(!r.text().contains("secret"), "{target} leaked a file");
    }
    // Active content is never served inline.
    for (name, _) in [
        ("page.html", 0),
        ("pic.svg", 0),
        ("data.xml", 0),
        ("app.js", 0),
    ] {
        let r = s.get(&format!("/view?filename={name}"));
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(
            r.header("content-type"),
            Some("application/octet-stream"),
            "{name}"
        );
        assert!(
            r.header("content-disposition")
                .unwrap()
                .starts_with("attachment;"),
            "{name}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    // Upload containment.
    let png = tiny_png(2, 2, 255);
    for parts in [
        vec![
            ("image", Some("x.png"), &png[..]),
            ("subfolder", None, &b"../../escape"[..]),
        ],
        vec![
            ("image", Some("x.png"), &png[..]),
            ("subfolder", None, &b"/tmp"[..]),
        ],
        vec![("image", Some("../x.png"), &png[..])],
        vec![("image", Some("a/../../x.png"), &png[..])],
        vec![("image", Some(".."), &png[..])],
        vec![
            ("image", Some("x.png"), &png[..]),
            ("type", None, &b"models"[..]),
        ],
        vec![("subfolder", None, &b"a"[..])],
        vec![
            ("image", Some("x.png"), &png[..]),
            ("subfolder", None, &b"linkdir"[..]),
            ("type", None, &b"output"[..]),
        ],
    ] {
        let r = s.post_multipart("/upload/image", &parts);
        assert_eq!(
            r.status,
            400,
            "{:?}",
            parts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>()
        );
    }
    assert!(!s.path("escape").exists());
    assert!(!outside.path().join("x.png").exists());
    // Mask upload with an escaping original: nothing written, 200 (ComfyUI quirk).
    let r = s.post_multipart(
        "/upload/mask",
        &[
            ("image", Some("m.png"), &png[..]),
            (
                "original_ref",
                None,
                br#"{"filename": "../secret_in_base.txt", "type": "output"}"#,
            ),
        ],
    );
    assert_eq!(r.status, 200);
    assert!(!s.path("input/m.png").exists());
}

#[test]
fn uploads_rename_overwrite_and_masks() {
    let s = Server::start(&[]);
    let one = tiny_png(3, 3, 255);
    let two = tiny_png(4, 4, 255);
    let up = |parts: &[(&str, Option<&str>, &[u8])]| {
        let r = s.post_multipart("/upload/image", parts);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    assert_eq!(
        up(&[("image", Some("pic.png"), &one)]),
        json!({"name": "pic.png", "subfolder": "", "type": "input"})
    );
    assert_eq!(
        up(&[("image", Some("pic.png"), &one)])["name"],
        "pic.png",
        "identical content is a duplicate"
    );
    assert_eq!(
        up(&[("image", Some("pic.png"), &two)])["name"],
        "pic (1).png"
    );
    assert_eq!(
        up(&[("image", Some("pic.png"), &tiny_png(5, 5, 255))])["name"],
        "pic (2).png"
    );
    assert_eq!(
        up(&[
            ("image", Some("pic.png"), &two),
            ("overwrite", None, b"true")
        ])["name"],
        "pic.png"
    );
    assert_eq!(std::fs::read(s.path("input/pic.png")).unwrap(), two);
    assert_eq!(
        up(&[
            ("image", Some("clip.png"), &one),
            ("subfolder", None, b"pasted"),
            ("type", None, b"temp")
        ]),
        json!({"name": "clip.png", "subfolder": "pasted", "type": "temp"})
    );
    assert!(s.path("temp/pasted/clip.png").is_file());
    let v = s.get("/api/view?filename=pic.png&type=input");
    assert_eq!(v.body, two);
    let leftovers: Vec<_> = std::fs::read_dir(s.path("input"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    // Mask: alpha comes from the uploaded image, pixels and text chunks from the original.
    up(&[("image", Some("orig.png"), &tiny_png(4, 4, 255))]);
    let mask = tiny_png(4, 4, 7);
    let r = s.post_multipart(
        "/upload/mask",
        &[
            ("image", Some("orig_mask.png"), &mask[..]),
            ("subfolder", None, b"clipspace"),
            ("type", None, b"input"),
            ("original_ref", None, br#"{"filename": "orig.png [input]"}"#),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"name": "orig_mask.png", "subfolder": "clipspace", "type": "input"})
    );
    let merged = std::fs::read(s.path("input/clipspace/orig_mask.png")).unwrap();
    assert!(merged.starts_with(b"\x89PNG"));
    assert!(
        merged.windows(6).any(|w| w == b"prompt"),
        "text chunk of the original kept"
    );
    let alpha = s.get("/view?filename=orig_mask.png&subfolder=clipspace&type=input&channel=a");
    assert_eq!(alpha.status, 200);
}

#[test]
fn origin_check_and_cors() {
    let s = Server::start(&[]);
    let body = json!({"prompt": blur_graph("o", 8)}).to_string();
    for origin in [
        "http://evil.example",
        "null",
        "http://127.0.0.1:1",
        "file://",
    ] {
        let r = s.request(
            "POST",
            "/prompt",
            &[("Origin", origin), ("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 403, "origin {origin}");
        assert!(r.body.is_empty());
    }
    assert_eq!(
        s.request("GET", "/queue", &[("Origin", "http://evil.example")], b"")
            .status,
        403
    );
    let same = format!("http://127.0.0.1:{}", s.port);
    assert_eq!(
        s.request("POST", "/prompt", &[("Origin", &same)], body.as_bytes())
            .status,
        200
    );
    assert_eq!(
        s.request(
            "POST",
            "/prompt",
            &[("Origin", "http://127.0.0.1")],
            body.as_bytes()
        )
        .status,
        200
    );
    assert_eq!(s.request("OPTIONS", "/prompt", &[], b"").status, 200);
    assert_eq!(s.get("/prompt").header("access-control-allow-origin"), None);

    let c = Server::start(&["--enable-cors-header"]);
    let r = c.request(
        "POST",
        "/prompt",
        &[("Origin", "http://evil.example")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let o = c.request(
        "OPTIONS",
        "/prompt",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(o.status, 200);
    assert_eq!(
        o.header("access-control-allow-methods"),
        Some("POST, GET, DELETE, PUT, OPTIONS")
    );
    let c2 = Server::start(&["--enable-cors-header", "https://app.example"]);
    assert_eq!(
        c2.get("/features").header("access-control-allow-origin"),
        Some("https://app.example")
    );
}

#[test]
fn body_limit_413_and_garbage_never_kills_the_server() {
    let s = Server::start(&["--max-upload-size", "1"]);
    let big = vec![b'a'; 1024 * 1024 + 10];
    let r = s.request(
        "POST",
        "/upload/image",
        &[("Content-Type", "multipart/form-data; boundary=x")],
        &big,
    );
    assert_eq!(r.status, 413);
    let r = s.request("POST", "/prompt", &[], &big);
    assert_eq!(r.status, 413);
    assert_eq!(
        s.get("/features").json()["max_upload_size"],
        json!(1048576.0)
    );
    // Hostile or odd inputs: each gets an answer, none takes the server down.
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("POST", "/prompt", b"[]".to_vec()),
        ("POST", "/prompt", b"{\"prompt\": []}".to_vec()),
        ("POST", "/prompt", b"{\"prompt\": {\"1\": 5}}".to_vec()),
        ("POST", "/prompt", b"{\"prompt\": {\"1\": {\"class_type\": 3, \"inputs\": []}}}".to_vec()),
        ("POST", "/prompt", b"{\"prompt\": {\"1\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"9\", 0]}}}}".to_vec()),
        ("POST", "/prompt", b"{\"prompt\": {\"1\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"1\", 0]}}}}".to_vec()),
        ("POST", "/prompt", b"{\"prompt\": {}, \"number\": \"abc\"}".to_vec()),
        ("POST", "/prompt", "{\"prompt\": \"\u{1F600}\"}".as_bytes().to_vec()),
        ("POST", "/prompt", vec![0xff, 0xfe, 0x00]),
        ("POST", "/queue", b"{\"delete\": \"notalist\"}".to_vec()),
        ("POST", "/queue", b"5".to_vec()),
        ("POST", "/history", b"{\"delete\": [1, null, {}]}".to_vec()),
        ("POST", "/free", b"[1]".to_vec()),
        ("POST", "/interrupt", b"{\"prompt_id\": 5}".to_vec()),
        ("POST", "/upload/image", b"not multipart".to_vec()),
        ("GET", "/view?filename=%ff%fe", vec![]),
        ("GET", "/view?filename=a&filename=b&type=", vec![]),
        ("GET", "/history?offset=-99999999999999999999", vec![]),
        ("GET", "/history/%00", vec![]),
        ("GET", "/object_info/%E2%82%AC", vec![]),
        ("GET", "/models/%2e%2e", vec![]),
        ("GET", "/api/jobs?offset=-5&limit=99999999999999999999999", vec![]),
        ("GET", "/ws", vec![]),
    ];
    for (m, path, body) in &cases {
        let r = s.try_request(m, path, &[], body);
        let r = r.unwrap_or_else(|e| panic!("{m} {path}: no answer ({e})"));
        assert!(r.status < 500, "{m} {path} -> {} {}", r.status, r.text());
    }
    assert_eq!(s.get("/system_stats").status, 200);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let s = Server::start(&[
        "--preview-method",
        "auto",
        "--max-queue-size",
        "100",
        "--max-execution-time",
        "30",
    ]);
    std::fs::write(s.path("temp/leftover.png"), b"x").unwrap();
    let id = s.submit(&blur_graph("before_exit", 16), None);
    s.wait_history(&id);
    let (status, dir) = s.terminate();
    let base = dir.path();
    assert!(status.success(), "exit status {status:?}");
    assert!(!base.join("temp").exists(), "temp/ is removed at exit");
    assert!(base.join("output/before_exit_00001_.png").is_file());
}

#[test]
fn queue_limit_answers_429() {
    let s = Server::start(&["--max-queue-size", "1"]);
    let a = s.submit(&slow_graph("full", 40), None);
    let r = s.post_json("/prompt", &json!({"prompt": blur_graph("x", 8)}));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "queue_full");
    // A targeted interrupt only reaches a running prompt: wait until it has started.
    wait_until("A running", || {
        s.get("/queue").json()["queue_running"].as_array().map(|r| r.len()) == Some(1)
    });
    s.post_json("/interrupt", &json!({"prompt_id": a}));
    s.wait_history(&a);
}
