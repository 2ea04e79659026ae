//! The downloader against a local mock of the Hugging Face endpoints.

use comfy_hub::mock::{bytes, MockFile, MockHub};
use comfy_hub::{download, HubConfig, HubError, ModelSpec, NoProgress, Outcome};

fn cfg(hub: &MockHub) -> HubConfig {
    HubConfig { endpoint: hub.endpoint.clone(), ..Default::default() }
}

#[test]
fn downloads_and_verifies_lfs_file() {
    let data = bytes(300_000, 1);
    let hub = MockHub::start(vec![("org/model/model.safetensors", MockFile::lfs(data.clone()))]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec: ModelSpec = "org/model:model.safetensors".parse().unwrap();
    let remote = comfy_hub::head(&cfg(&hub), &spec).unwrap();
    assert_eq!(remote.size, Some(300_000));
    assert!(remote.location.ends_with("/cdn/org/model/model.safetensors"));
    let out = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap();
    let path = dir.path().join("checkpoints/model.safetensors");
    match out {
        Outcome::Downloaded { path: p, bytes, resumed_from, verified_sha256 } => {
            assert_eq!((p.as_path(), bytes, resumed_from), (path.as_path(), 300_000, 0));
            assert!(verified_sha256.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), data);
    // A second run finds it and fetches nothing.
    let before = hub.requests().iter().filter(|r| r.method == "GET").count();
    let again = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap();
    assert!(matches!(again, Outcome::AlreadyPresent { bytes: 300_000, .. }));
    assert_eq!(hub.requests().iter().filter(|r| r.method == "GET").count(), before);
}

#[test]
fn interrupted_download_resumes_with_range() {
    let data = bytes(400_000, 7);
    let mut f = MockFile::lfs(data.clone());
    f.interrupts = 1;
    let hub = MockHub::start(vec![("org/vae/v.safetensors", f)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec: ModelSpec = "org/vae:v.safetensors:vae".parse().unwrap();
    let err = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap_err();
    assert!(matches!(err, HubError::Interrupted { .. }), "{err}");
    let partial = dir.path().join("vae/v.safetensors.incomplete");
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < 400_000, "partial file keeps the received bytes ({kept})");
    assert!(!dir.path().join("vae/v.safetensors").exists());

    let out = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap();
    assert!(matches!(out, Outcome::Downloaded { resumed_from, .. } if resumed_from == kept), "{out:?}");
    assert_eq!(std::fs::read(dir.path().join("vae/v.safetensors")).unwrap(), data);
    assert!(!partial.exists());
    let ranged: Vec<_> = hub.requests().into_iter().filter(|r| r.range.is_some()).collect();
    assert_eq!(ranged.len(), 1);
    assert_eq!(ranged[0].range.as_deref(), Some(format!("bytes={kept}-").as_str()));
}

#[test]
fn checksum_mismatch_fails_and_deletes() {
    let mut f = MockFile::lfs(bytes(50_000, 3));
    f.claimed_sha256 = "0".repeat(64);
    let hub = MockHub::start(vec![("org/bad/x.safetensors", f)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec: ModelSpec = "org/bad:x.safetensors".parse().unwrap();
    let err = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap_err();
    assert!(matches!(err, HubError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&"0".repeat(64)));
    assert!(!dir.path().join("checkpoints/x.safetensors").exists());
    assert!(!dir.path().join("checkpoints/x.safetensors.incomplete").exists());
}

#[test]
fn token_is_sent_for_gated_repos() {
    let mut f = MockFile::lfs(bytes(1000, 9));
    f.token = Some("secret".into());
    let hub = MockHub::start(vec![("org/gated/g.safetensors", f)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec: ModelSpec = "org/gated:g.safetensors".parse().unwrap();
    let err = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap_err();
    assert!(matches!(err, HubError::Unauthorized { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"));
    let c = HubConfig { token: Some("secret".into()), ..cfg(&hub) };
    download(&c, &spec, dir.path(), false, &mut NoProgress).unwrap();
    assert!(hub.requests().iter().any(|r| r.method == "HEAD" && r.authorization.as_deref() == Some("Bearer secret")));
}

#[test]
fn missing_file_and_offline_are_clear() {
    let hub = MockHub::start(vec![]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec: ModelSpec = "org/none:x.safetensors".parse().unwrap();
    let err = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap_err();
    assert!(matches!(err, HubError::NotFound { .. }), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let off = HubConfig { endpoint: format!("http://127.0.0.1:{port}"), ..Default::default() };
    let err = download(&off, &spec, dir.path(), false, &mut NoProgress).unwrap_err();
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    assert!(err.to_string().contains("offline"), "{err}");
    let mode = HubConfig { offline: true, ..Default::default() };
    assert!(matches!(download(&mode, &spec, dir.path(), false, &mut NoProgress), Err(HubError::OfflineMode { .. })));
}

#[test]
fn small_non_lfs_file_is_checked_by_size_only() {
    let mut f = MockFile::lfs(b"{\"a\": 1}".to_vec());
    f.lfs = false;
    let hub = MockHub::start(vec![("org/cfg/config.json", f)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec: ModelSpec = "org/cfg:config.json:configs".parse().unwrap();
    let out = download(&cfg(&hub), &spec, dir.path(), false, &mut NoProgress).unwrap();
    assert!(matches!(out, Outcome::Downloaded { verified_sha256: None, bytes: 8, .. }), "{out:?}");
    assert_eq!(std::fs::read(dir.path().join("configs/config.json")).unwrap(), b"{\"a\": 1}");
}
