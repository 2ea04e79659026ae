//! End-to-end tests of the `/ws` protocol (websocket.md) against the real binary.

mod server_support;

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use server_support::ws::{connect, next_json, until_done, Ws};
use server_support::{blur_graph, slow_graph, Server};
use tokio_tungstenite::tungstenite::Message;

fn kinds(msgs: &[Json]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["type"].as_str().unwrap().to_string())
        .collect()
}

/// Expects no text message within `ms`.
async fn silent(ws: &mut Ws, ms: u64) -> Option<Json> {
    match tokio::time::timeout(Duration::from_millis(ms), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => Some(serde_json::from_str(t.as_str()).unwrap()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_status_sid_and_feature_flags() {
    let s = Server::start(&[]);
    let mut anon = connect(&s, "/ws").await;
    let hello = next_json(&mut anon).await;
    assert_eq!(hello["type"], "status");
    assert_eq!(
        hello["data"]["status"],
        json!({"exec_info": {"queue_remaining": 0}})
    );
    let sid = hello["data"]["sid"].as_str().unwrap();
    assert_eq!(sid.len(), 32);
    assert!(sid
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    let mut named = connect(&s, "/api/ws?clientId=my-client").await;
    assert_eq!(next_json(&mut named).await["data"]["sid"], "my-client");
    named
        .send(Message::Text(
            r#"{"type": "feature_flags", "data": {"supports_preview_metadata": true}}"#.into(),
        ))
        .await
        .unwrap();
    let ff = next_json(&mut named).await;
    assert_eq!(
        ff,
        json!({"type": "feature_flags", "data": {"supports_preview_metadata": true, "max_upload_size": 104857600.0}})
    );
    // Only the first text frame is interpreted; garbage afterwards is ignored.
    named.send(Message::Text("not json".into())).await.unwrap();
    named
        .send(Message::Text(
            r#"{"type": "feature_flags", "data": {}}"#.into(),
        ))
        .await
        .unwrap();
    assert_eq!(silent(&mut named, 300).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_messages_addressing_and_caching() {
    let s = Server::start(&[]);
    let mut c = connect(&s, "/ws?clientId=C").await;
    let mut other = connect(&s, "/ws?clientId=OTHER").await;
    next_json(&mut c).await;
    next_json(&mut other).await;

    let id = s.submit(&blur_graph("ws", 24), Some("C"));
    let msgs = until_done(&mut c, &id, false).await;
    let k = kinds(&msgs);
    let pos = |t: &str| {
        k.iter()
            .position(|x| x == t)
            .unwrap_or_else(|| panic!("no {t} in {k:?}"))
    };
    assert!(pos("status") < pos("execution_start"));
    assert!(pos("execution_start") < pos("execution_cached"));
    assert!(pos("execution_cached") < pos("executing"));
    assert!(pos("executed") < pos("execution_success"));
    assert!(k.contains(&"progress_state".to_string()));
    let start = &msgs[pos("execution_start")]["data"];
    assert_eq!(start["prompt_id"], id.as_str());
    assert!(start["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(msgs[pos("execution_cached")]["data"]["nodes"], json!([]));
    let executing: Vec<&Json> = msgs
        .iter()
        .filter(|m| m["type"] == "executing" && !m["data"]["node"].is_null())
        .collect();
    let mut nodes: Vec<&str> = executing
        .iter()
        .map(|m| m["data"]["node"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["1", "2", "3"]);
    assert_eq!(
        executing[0]["data"]["display_node"],
        executing[0]["data"]["node"]
    );
    let executed = &msgs[pos("executed")]["data"];
    assert_eq!(executed["node"], "3");
    assert_eq!(
        executed["output"]["images"][0],
        json!({"filename": "ws_00001_.png", "subfolder": "", "type": "output"})
    );
    let last_status = msgs.iter().rev().find(|m| m["type"] == "status").unwrap();
    assert_eq!(
        last_status["data"]["status"]["exec_info"]["queue_remaining"],
        0
    );

    // The other client sees only the status broadcasts.
    let mut seen = Vec::new();
    while let Some(m) = silent(&mut other, 300).await {
        seen.push(m);
    }
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|m| m["type"] == "status"), "{seen:?}");

    // Same prompt again: everything cached, the output node still reports its images.
    let id2 = s.submit(&blur_graph("ws", 24), Some("C"));
    let msgs = until_done(&mut c, &id2, false).await;
    let k = kinds(&msgs);
    let cached = msgs
        .iter()
        .find(|m| m["type"] == "execution_cached")
        .unwrap();
    let mut nodes: Vec<&str> = cached["data"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["1", "2", "3"]);
    assert!(
        !msgs
            .iter()
            .any(|m| m["type"] == "executing" && !m["data"]["node"].is_null()),
        "{k:?}"
    );
    let executed = msgs.iter().find(|m| m["type"] == "executed").unwrap();
    assert_eq!(
        executed["data"]["output"]["images"][0]["filename"],
        "ws_00001_.png"
    );
    assert!(k.contains(&"execution_success".to_string()));

    // A prompt without client_id: execution messages go nowhere, status to all.
    let id3 = s.submit(&blur_graph("anon", 8), None);
    s.wait_history(&id3);
    // (progress and progress_state are broadcast in that case, websocket.md §2).
    while let Some(m) = silent(&mut c, 300).await {
        let t = m["type"].as_str().unwrap();
        assert!(["status", "progress", "progress_state"].contains(&t), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_error_and_reconnect() {
    let s = Server::start(&[]);
    let mut c = connect(&s, "/ws?clientId=R").await;
    next_json(&mut c).await;
    let id = s.submit(&slow_graph("int", 40), Some("R"));
    // Wait until a blur node runs, then interrupt.
    loop {
        let m = next_json(&mut c).await;
        if m["type"] == "executing" && m["data"]["node"] == "10" {
            break;
        }
    }
    // Reconnect with the same clientId mid-run: the new socket is told what is executing.
    drop(c);
    let mut c = connect(&s, "/ws?clientId=R").await;
    let hello = next_json(&mut c).await;
    assert_eq!(hello["data"]["sid"], "R");
    assert_eq!(hello["data"]["status"]["exec_info"]["queue_remaining"], 1);
    let running = next_json(&mut c).await;
    assert_eq!(running["type"], "executing");
    assert!(running["data"]["node"].is_string());
    assert!(running["data"].get("prompt_id").is_none());

    assert_eq!(
        s.post_json("/interrupt", &json!({"prompt_id": id})).status,
        200
    );
    let mut msgs = Vec::new();
    loop {
        let m = next_json(&mut c).await;
        let stop = m["type"] == "execution_interrupted" || m["type"] == "execution_success";
        msgs.push(m);
        if stop {
            break;
        }
    }
    let intr = msgs
        .iter()
        .find(|m| m["type"] == "execution_interrupted")
        .unwrap_or_else(|| panic!("{:?}", kinds(&msgs)));
    assert_eq!(intr["data"]["prompt_id"], id.as_str());
    assert_eq!(intr["data"]["node_type"], "ImageBlur");
    assert!(intr["data"]["executed"]
        .as_array()
        .unwrap()
        .contains(&json!("1")));
    assert!(!kinds(&msgs).contains(&"execution_success".to_string()));
    let h = s.wait_history(&id);
    assert_eq!(h["status"]["status_str"], "error");

    // Resubmitting resumes from the cache: the image node is not run again.
    let id2 = s.submit(&blur_graph("after", 8), Some("R"));
    let msgs = until_done(&mut c, &id2, false).await;
    assert!(kinds(&msgs).contains(&"execution_success".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sockets_and_a_stalled_one_do_not_block_execution() {
    let s = Server::start(&[]);
    // A client that completes the handshake and then never reads again.
    let stalled = connect(&s, "/ws?clientId=STALLED").await;
    let mut socks = Vec::new();
    for i in 0..20 {
        let mut w = connect(&s, &format!("/ws?clientId=s{i}")).await;
        next_json(&mut w).await;
        socks.push(w);
    }
    for n in 0..30 {
        let id = s.submit(&blur_graph(&format!("many{n}"), 8), Some("STALLED"));
        assert_eq!(s.wait_history(&id)["status"]["status_str"], "success");
    }
    // Every live socket got every status broadcast (2 per prompt enqueued/taken + 1 finished).
    for w in socks.iter_mut() {
        let mut statuses = 0;
        while let Some(m) = silent(w, 200).await {
            if m["type"] == "status" {
                statuses += 1;
            }
        }
        assert!(statuses >= 30, "only {statuses} status messages");
    }
    drop(stalled);
    assert_eq!(s.get("/system_stats").status, 200);
}
