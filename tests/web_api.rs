//! End-to-end tests of the routes the web editor needs (api.md §4.7–4.10, §6.4–6.6, §7) and of
//! static frontend serving, against the real `comfy-rs` binary. Path-safety cases included.

mod server_support;

use std::time::{Duration, SystemTime};

use serde_json::{json, Value as Json};
use server_support::Server;

fn post_raw(s: &Server, target: &str, body: &[u8]) -> server_support::Resp {
    s.request(
        "POST",
        target,
        &[("Content-Type", "application/json")],
        body,
    )
}

#[test]
fn users_and_settings() {
    let s = Server::start(&[]);
    for prefix in ["", "/api"] {
        let u = s.get(&format!("{prefix}/users"));
        assert_eq!(u.status, 200);
        assert_eq!(u.json()["storage"], "server");
    }
    assert_eq!(
        s.get("/api/users").json(),
        json!({"storage": "server", "migrated": false})
    );
    assert_eq!(s.get("/api/settings").json(), json!({}));
    assert_eq!(s.get("/api/settings/Comfy.Locale").json(), Json::Null);

    let r = post_raw(&s, "/api/settings/Comfy.Locale", b"\"en\"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(s.get("/settings/Comfy.Locale").json(), json!("en"));
    let r = s.post_json("/settings", &json!({"A.b": [1, 2], "Comfy.Locale": "fr"}));
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get("/api/settings").json(),
        json!({"Comfy.Locale": "fr", "A.b": [1, 2]})
    );
    // A percent-encoded id (the frontend encodes them).
    assert_eq!(
        post_raw(&s, "/api/settings/Comfy.Node%20Opacity", b"0.5").status,
        200
    );
    assert_eq!(
        s.get("/api/settings/Comfy.Node%20Opacity").json(),
        json!(0.5)
    );
    // The file: 4-space indented JSON in user/default.
    let file = s.path("user/default/comfy.settings.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\n    \"Comfy.Locale\": \"fr\""), "{text}");
    assert_eq!(
        s.get("/api/users").json(),
        json!({"storage": "server", "migrated": true})
    );
    // Bad bodies.
    assert_eq!(post_raw(&s, "/api/settings", b"[1]").status, 400);
    assert_eq!(post_raw(&s, "/api/settings", b"{nope").status, 400);
    // The Comfy-User header is ignored without --multi-user.
    let r = s.request("GET", "/api/settings", &[("Comfy-User", "../../etc")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["Comfy.Locale"], "fr");

    // Concurrent writes of different settings all survive (no lost read-modify-write).
    std::thread::scope(|sc| {
        for i in 0..12 {
            let s = &s;
            sc.spawn(move || {
                let r = post_raw(
                    s,
                    &format!("/api/settings/Par.{i}"),
                    i.to_string().as_bytes(),
                );
                assert_eq!(r.status, 200);
            });
        }
    });
    let all = s.get("/api/settings").json();
    for i in 0..12 {
        assert_eq!(all[format!("Par.{i}")], json!(i), "setting Par.{i} lost");
    }

    // POST /users creates a sanitised id; duplicates are refused.
    let r = s.post_json("/api/users", &json!({"username": "Jo Smith"}));
    assert_eq!(r.status, 200);
    let id = r.json().as_str().unwrap().to_string();
    assert!(id.starts_with("Jo-Smith_"), "{id}");
    let r = s.post_json("/api/users", &json!({"username": "Jo Smith"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "Duplicate username."}));
    let users: Json =
        serde_json::from_slice(&std::fs::read(s.path("user/users.json")).unwrap()).unwrap();
    assert_eq!(users[&id], "Jo Smith");
}

#[test]
fn userdata_files_list_move_delete() {
    let s = Server::start(&[]);
    let wf = br#"{"nodes": [], "links": []}"#;
    // Write (slashes as %2F), conflict, full_info.
    let r = post_raw(&s, "/api/userdata/workflows%2Fa.json", wf);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!("workflows/a.json"));
    let r = post_raw(
        &s,
        "/api/userdata/workflows%2Fa.json?overwrite=false",
        b"{}",
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.text(), "File already exists");
    let r = post_raw(
        &s,
        "/userdata/workflows%2Fsub%2Fb.json?full_info=true",
        b"{}",
    );
    assert_eq!(r.status, 200);
    let info = r.json();
    assert_eq!(info["path"], "workflows/sub/b.json");
    assert_eq!(info["size"], 2);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((info["modified"].as_f64().unwrap() - now).abs() < 60.0);
    assert!(info["created"].as_f64().unwrap() > 0.0);
    std::fs::write(s.path("user/default/workflows/.hidden.json"), b"{}").unwrap();

    // Read back.
    let r = s.get("/api/userdata/workflows%2Fa.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, wf);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(s.get("/api/userdata/workflows%2Fnope.json").status, 404);

    // Listings.
    assert_eq!(
        s.get("/api/userdata?dir=workflows").json(),
        json!(["a.json"])
    );
    assert_eq!(
        s.get("/api/userdata?dir=workflows&recurse=true").json(),
        json!(["a.json", "sub/b.json"])
    );
    assert_eq!(
        s.get("/api/userdata?dir=workflows&recurse=true&split=true")
            .json(),
        json!([["a.json", "a.json"], ["sub/b.json", "sub", "b.json"]])
    );
    let full = s
        .get("/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
        .json();
    assert_eq!(full[1]["path"], "sub/b.json");
    assert_eq!(full[0]["size"], wf.len());
    let r = s.get("/api/userdata?dir=subgraphs&recurse=true&split=false&full_info=true");
    assert_eq!((r.status, r.text().as_str()), (404, "Directory not found"));
    let r = s.get("/api/userdata");
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Directory not provided")
    );
    let v2 = s.get("/api/v2/userdata?path=workflows").json();
    let names: Vec<&str> = v2
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "workflows/sub",
            "workflows/.hidden.json",
            "workflows/a.json",
            "workflows/sub/b.json"
        ]
    );
    assert_eq!(v2[0]["type"], "directory");
    assert_eq!(v2[2]["size"], wf.len());
    assert_eq!(s.get("/api/v2/userdata?path=nope").status, 404);
    assert_eq!(
        s.get("/api/v2/userdata?path=workflows%2Fa.json").status,
        400
    );

    // Move: conflict without overwrite, then to a new name.
    let r = s.request(
        "POST",
        "/api/userdata/workflows%2Fa.json/move/workflows%2Fsub%2Fb.json?overwrite=false",
        &[],
        b"",
    );
    assert_eq!(r.status, 409);
    let r = s.request(
        "POST",
        "/api/userdata/workflows%2Fa.json/move/workflows%2Frenamed.json?full_info=true",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "workflows/renamed.json");
    assert!(!s.path("user/default/workflows/a.json").exists());
    assert_eq!(
        s.request(
            "POST",
            "/api/userdata/workflows%2Fa.json/move/x.json",
            &[],
            b""
        )
        .status,
        404
    );

    // Delete.
    assert_eq!(
        s.request("DELETE", "/api/userdata/workflows%2Frenamed.json", &[], b"")
            .status,
        204
    );
    assert_eq!(
        s.request("DELETE", "/api/userdata/workflows%2Frenamed.json", &[], b"")
            .status,
        404
    );
    assert_eq!(
        s.request("DELETE", "/userdata/workflows%2Fsub", &[], b"")
            .status,
        400
    );
    assert!(s.path("user/default/workflows/sub/b.json").exists());
}

#[test]
fn userdata_stays_inside_the_user_directory() {
    let s = Server::start(&[]);
    std::fs::create_dir_all(s.path("user/default")).unwrap();
    std::fs::write(s.path("user/secret.json"), b"users-level").unwrap();
    std::fs::write(s.path("outside.txt"), b"outside").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.json"), b"far").unwrap();
    std::os::unix::fs::symlink(outside.path(), s.path("user/default/link")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("x.json"),
        s.path("user/default/file.json"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("new.json"),
        s.path("user/default/dangling.json"),
    )
    .unwrap();

    let bad = [
        "..%2Fsecret.json",
        "..%2F..%2Foutside.txt",
        "%252e%252e%252fsecret.json",
        "%2e%2e%2fsecret.json",
        "%2Fetc%2Fpasswd",
        "workflows%2F..%2F..%2Fsecret.json",
        "link%2Fx.json",
        "file.json",
        "a%2500b",
    ];
    for f in bad {
        for prefix in ["", "/api"] {
            let r = s.get(&format!("{prefix}/userdata/{f}"));
            assert_eq!(r.status, 403, "GET {f}");
            assert!(!r.text().contains("users-level") && !r.text().contains("far"));
            assert_eq!(
                post_raw(&s, &format!("{prefix}/userdata/{f}"), b"pwned").status,
                403,
                "POST {f}"
            );
            assert_eq!(
                s.request("DELETE", &format!("{prefix}/userdata/{f}"), &[], b"")
                    .status,
                403,
                "DELETE {f}"
            );
        }
    }
    assert_eq!(
        post_raw(&s, "/api/userdata/dangling.json", b"pwned").status,
        403
    );
    assert_eq!(
        post_raw(&s, "/api/userdata/link%2Fnew.json", b"pwned").status,
        403
    );
    assert!(
        !outside.path().join("new.json").exists(),
        "a write escaped through a symlink"
    );
    assert_eq!(
        std::fs::read(s.path("user/secret.json")).unwrap(),
        b"users-level"
    );
    assert_eq!(
        std::fs::read(outside.path().join("x.json")).unwrap(),
        b"far"
    );
    // Moves cannot leave either.
    post_raw(&s, "/api/userdata/ok.json", b"{}");
    assert_eq!(
        s.request(
            "POST",
            "/api/userdata/ok.json/move/..%2Fmoved.json",
            &[],
            b""
        )
        .status,
        403
    );
    assert_eq!(
        s.request(
            "POST",
            "/api/userdata/ok.json/move/link%2Fmoved.json",
            &[],
            b""
        )
        .status,
        403
    );
    assert_eq!(
        s.request(
            "POST",
            "/api/userdata/..%2Fsecret.json/move/stolen.json",
            &[],
            b""
        )
        .status,
        403
    );
    assert!(!s.path("user/moved.json").exists());
    // Listings.
    for d in ["..", "..%2F..", "%2Fetc", "link"] {
        let r = s.get(&format!("/api/userdata?dir={d}"));
        assert_eq!(r.status, 403, "list {d}");
        assert_eq!(r.text(), "Invalid directory");
    }
    let listed = s.get("/api/userdata?dir=.&recurse=true").json();
    assert!(
        !listed.to_string().contains("x.json"),
        "listing followed a link out: {listed}"
    );
    assert_eq!(s.get("/api/v2/userdata?path=..").status, 400);
    assert_eq!(s.get("/api/v2/userdata?path=link").status, 400);
}

#[test]
fn editor_support_routes() {
    let base = tempfile::tempdir().unwrap();
    let node = base.path().join("custom_nodes/my-pack");
    std::fs::create_dir_all(node.join("example_workflows")).unwrap();
    std::fs::write(node.join("example_workflows/demo.json"), b"{\"x\": 1}").unwrap();
    std::fs::create_dir_all(node.join("locales/en")).unwrap();
    std::fs::write(node.join("locales/en/main.json"), br#"{"hello": "Hello"}"#).unwrap();
    std::fs::write(
        node.join("locales/en/nodeDefs.json"),
        br#"{"N": {"display_name": "En"}}"#,
    )
    .unwrap();
    let ck = base.path().join("models/checkpoints/sub");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("m.safetensors"), b"12345").unwrap();
    std::fs::write(ck.join("m.png"), b"\x89PNG\r\n\x1a\nfake").unwrap();
    std::fs::write(ck.join("notes.txt"), b"x").unwrap();
    let s = Server::start_in(base, &[]);

    for prefix in ["", "/api"] {
        assert_eq!(
            s.get(&format!("{prefix}/i18n")).json(),
            json!({"en": {"hello": "Hello", "nodeDefs": {"N": {"display_name": "En"}}}})
        );
        assert_eq!(
            s.get(&format!("{prefix}/workflow_templates")).json(),
            json!({"my-pack": ["demo"]})
        );
        let em = s.get(&format!("{prefix}/experiment/models")).json();
        let names: Vec<&str> = em
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"checkpoints")
                && !names.contains(&"configs")
                && !names.contains(&"custom_nodes")
        );
        assert_eq!(
            em[0]["folders"][0],
            s.path("models/checkpoints").to_string_lossy().as_ref()
        );
        let files = s
            .get(&format!("{prefix}/experiment/models/checkpoints"))
            .json();
        assert_eq!(files.as_array().unwrap().len(), 1, "{files}");
        assert_eq!(files[0]["name"], "sub/m.safetensors");
        assert_eq!(files[0]["pathIndex"], 0);
        assert_eq!(files[0]["size"], 5);
        assert_eq!(
            s.get(&format!("{prefix}/experiment/models/nope")).status,
            404
        );
        let p = s.get(&format!(
            "{prefix}/experiment/models/preview/checkpoints/0/sub/m.safetensors"
        ));
        assert_eq!(p.status, 200);
        assert_eq!(p.header("content-type"), Some("image/png"));
        assert_eq!(
            s.get(&format!(
                "{prefix}/experiment/models/preview/checkpoints/0/..%2F..%2Fx.safetensors"
            ))
            .status,
            404
        );
    }
    let f = s.get("/api/workflow_templates/my-pack/demo.json");
    assert_eq!(f.status, 200);
    assert_eq!(f.json(), json!({"x": 1}));
    assert_eq!(
        s.get("/api/workflow_templates/my-pack/..%2F..%2F..%2Fuser%2Fx")
            .status,
        404
    );

    // /internal: not duplicated under /api.
    let fp = s.get("/internal/folder_paths").json();
    assert_eq!(
        fp["checkpoints"][0],
        s.path("models/checkpoints").to_string_lossy().as_ref()
    );
    assert!(fp.get("configs").is_some() && fp.get("custom_nodes").is_some());
    assert_eq!(s.get("/api/internal/folder_paths").status, 404);
    std::fs::write(s.path("output/old.png"), b"x").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(s.path("output/new.png"), b"x").unwrap();
    std::fs::create_dir_all(s.path("output/dir")).unwrap();
    assert_eq!(
        s.get("/internal/files/output").json(),
        json!(["new.png", "old.png"])
    );
    let r = s.get("/internal/files/models");
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "Invalid directory type"}));
    let logs = s.get("/internal/logs");
    assert_eq!(logs.status, 200);
    assert!(logs.json().is_string());
    let raw = s.get("/internal/logs/raw").json();
    assert!(raw["entries"].is_array());
    assert!(raw["size"]["cols"].as_u64().unwrap() > 0);
    let r = s.request(
        "PATCH",
        "/internal/logs/subscribe",
        &[],
        br#"{"clientId": "abc", "enabled": true}"#,
    );
    assert_eq!(r.status, 200);
    let r = s.request(
        "PATCH",
        "/internal/logs/subscribe",
        &[],
        br#"{"clientId": "abc", "enabled": false}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        s.request(
            "PATCH",
            "/internal/logs/subscribe",
            &[],
            br#"{"enabled": true}"#
        )
        .status,
        500
    );
}

#[test]
fn static_frontend_serving() {
    let base = tempfile::tempdir().unwrap();
    let web = base.path().join("fe");
    std::fs::create_dir_all(web.join("assets")).unwrap();
    std::fs::write(web.join("index.html"), b"<html>editor</html>").unwrap();
    std::fs::write(web.join("assets/app-abc.js"), b"export const a = 1;").unwrap();
    std::fs::write(web.join("assets/app-abc.css"), b"body{}").unwrap();
    std::fs::write(web.join("assets/logo.png"), b"\x89PNG\r\n\x1a\n").unwrap();
    std::fs::write(web.join("assets/font.woff2"), b"wOF2").unwrap();
    std::fs::write(web.join(".comfyui-frontend-version"), b"1.28.9").unwrap();
    std::fs::write(base.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(base.path().join("secret.txt"), web.join("assets/link.txt"))
        .unwrap();
    let web_arg = web.to_string_lossy().to_string();
    let s = Server::start_in(base, &["--front-end-root", &web_arg]);

    for path in ["/", "/api/"] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.text(), "<html>editor</html>");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        assert_eq!(r.header("expires"), Some("0"));
    }
    let js = s.get("/assets/app-abc.js");
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type").unwrap().contains("javascript"),
        "{:?}",
        js.header("content-type")
    );
    assert_eq!(js.header("cache-control"), Some("no-cache"));
    assert_eq!(js.header("x-content-type-options"), Some("nosniff"));
    let lm = js
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    let again = s.request(
        "GET",
        "/assets/app-abc.js",
        &[("If-Modified-Since", &lm)],
        b"",
    );
    assert_eq!(again.status, 304);
    assert_eq!(
        s.get("/assets/app-abc.css").header("content-type"),
        Some("text/css")
    );
    let png = s.get("/assets/logo.png");
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(png.header("cache-control"), Some("public, max-age=86400"));
    assert_eq!(
        s.get("/assets/font.woff2").header("content-type"),
        Some("font/woff2")
    );
    let head = s.request("HEAD", "/assets/app-abc.js", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    for bad in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/assets/..%2F..%2Fsecret.txt",
        "/assets/link.txt",
        "/.comfyui-frontend-version",
        "/assets/",
        "/nope.js",
    ] {
        let r = s.get(bad);
        assert_eq!(r.status, 404, "{bad}");
        assert!(!r.text().contains("secret"), "{bad}");
    }
    assert_eq!(
        s.request("POST", "/assets/app-abc.js", &[], b"").status,
        404
    );
    // The built-in page's assets are always there.
    assert_eq!(s.get("/builtin/app.js").status, 200);
}
