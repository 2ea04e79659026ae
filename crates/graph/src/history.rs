//! The in-memory history of executed prompts (`/history`) and the jobs view of the queue and
//! history (`/api/jobs`, api.md §8.2).

use std::collections::HashMap;

use serde_json::{json, Map, Value as Json};

/// Finished prompts in completion order, capped as ComfyUI caps them.
pub struct History {
    entries: Map<String, Json>,
    /// `create_time` (ms) of each entry's prompt, for the jobs API.
    create_times: HashMap<String, i64>,
    max: usize,
}

impl History {
    /// A history holding about `max` entries (ComfyUI keeps `max + 1`, see [`History::insert`]).
    pub fn new(max: usize) -> Self {
        History { entries: Map::new(), create_times: HashMap::new(), max }
    }

    /// Stores an entry. As in ComfyUI, the oldest entry is dropped first when there are already
    /// **more than** `max` entries; a reused id overwrites its entry in place.
    pub fn insert(&mut self, prompt_id: &str, entry: Json, create_time: i64) {
        if self.entries.len() > self.max {
            if let Some(oldest) = self.entries.keys().next().cloned() {
                self.entries.shift_remove(&oldest);
                self.create_times.remove(&oldest);
            }
        }
        self.entries.insert(prompt_id.to_string(), entry);
        self.create_times.insert(prompt_id.to_string(), create_time);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `GET /history`: with `offset < 0` and `max_items` set, the `max_items` most recent;
    /// otherwise entries from index `offset` on, at most `max_items` of them; oldest first.
    pub fn page(&self, max_items: Option<usize>, offset: i64) -> Json {
        let mut offset = offset;
        if offset < 0 {
            if let Some(m) = max_items {
                offset = self.entries.len() as i64 - m as i64;
            }
        }
        let mut out = Map::new();
        // Like Python, an entry is added before the limit is checked (`max_items=0` gives one).
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i as i64 >= offset {
                out.insert(k.clone(), v.clone());
                if max_items.is_some_and(|m| out.len() >= m) {
                    break;
                }
            }
        }
        Json::Object(out)
    }

    /// `GET /history/{id}`: `{id: entry}` or `{}`.
    pub fn item(&self, prompt_id: &str) -> Json {
        match self.entries.get(prompt_id) {
            Some(e) => json!({ prompt_id: e }),
            None => json!({}),
        }
    }

    pub fn get(&self, prompt_id: &str) -> Option<&Json> {
        self.entries.get(prompt_id)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.create_times.clear();
    }

    pub fn delete(&mut self, prompt_id: &str) {
        self.entries.shift_remove(prompt_id);
        self.create_times.remove(prompt_id);
    }

    /// Entries oldest first with their create times.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Json, Option<i64>)> {
        self.entries.iter().map(|(k, v)| (k, v, self.create_times.get(k).copied()))
    }
}

/// Job states of the jobs API.
pub const JOB_STATUSES: [&str; 4] = ["pending", "in_progress", "completed", "failed"];

/// Parameters of `GET /api/jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsQuery {
    /// Statuses to include (`None` = all).
    pub status: Option<Vec<String>>,
    pub workflow_id: Option<String>,
    /// `created_at` (default) or `execution_duration`.
    pub sort_by: String,
    /// `desc` (default) or `asc`.
    pub sort_order: String,
    pub limit: Option<usize>,
    pub offset: usize,
}

impl Default for JobsQuery {
    fn default() -> Self {
        JobsQuery {
            status: None,
            workflow_id: None,
            sort_by: "created_at".into(),
            sort_order: "desc".into(),
            limit: None,
            offset: 0,
        }
    }
}

impl JobsQuery {
    /// Parses the query string pairs; `Err` holds the message of the 400 `{"error": ...}` body.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<JobsQuery, String> {
        let mut q = JobsQuery::default();
        for (k, v) in pairs {
            match k {
                "status" => {
                    let list: Vec<String> =
                        v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
                    let invalid: Vec<&str> =
                        list.iter().map(String::as_str).filter(|s| !JOB_STATUSES.contains(s)).collect();
                    if !invalid.is_empty() {
                        return Err(format!(
                            "Invalid status value(s): {}. Valid values: {}",
                            invalid.join(", "),
                            JOB_STATUSES.join(", ")
                        ));
                    }
                    q.status = if list.is_empty() { None } else { Some(list) };
                }
                "workflow_id" => q.workflow_id = Some(v.to_string()).filter(|s| !s.is_empty()),
                "sort_by" => {
                    if v != "created_at" && v != "execution_duration" {
                        return Err("sort_by must be 'created_at' or 'execution_duration'".into());
                    }
                    q.sort_by = v.to_string();
                }
                "sort_order" => {
                    if v != "asc" && v != "desc" {
                        return Err("sort_order must be 'asc' or 'desc'".into());
                    }
                    q.sort_order = v.to_string();
                }
                "limit" => {
                    let n: i64 = v.trim().parse().map_err(|_| "limit must be an integer".to_string())?;
                    if n <= 0 {
                        return Err("limit must be a positive integer".into());
                    }
                    q.limit = Some(n as usize);
                }
                "offset" => {
                    let n: i64 = v.trim().parse().map_err(|_| "offset must be an integer".to_string())?;
                    q.offset = n.max(0) as usize;
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

fn workflow_id(extra_data: &Json) -> Option<Json> {
    extra_data.get("extra_pnginfo")?.get("workflow")?.get("id").filter(|v| !v.is_null()).cloned()
}

/// A queue item `[number, id, prompt, extra_data, outputs]` as a job.
pub fn queue_job(item: &Json, status: &str, create_time: Option<i64>) -> Json {
    let mut j = Map::new();
    j.insert("id".into(), item[1].clone());
    j.insert("status".into(), json!(status));
    j.insert("priority".into(), item[0].clone());
    if let Some(t) = create_time {
        j.insert("create_time".into(), json!(t));
    }
    j.insert("outputs_count".into(), json!(0));
    if let Some(w) = workflow_id(&item[3]) {
        j.insert("workflow_id".into(), w);
    }
    Json::Object(j)
}

fn previewable(media_type: &str, item: &Map<String, Json>) -> bool {
    if matches!(media_type, "images" | "video" | "audio" | "3d") {
        return true;
    }
    let format = item.get("format").and_then(Json::as_str).unwrap_or("");
    if format.starts_with("video/") || format.starts_with("audio/") {
        return true;
    }
    let f = item.get("filename").and_then(Json::as_str).unwrap_or("").to_ascii_lowercase();
    [".obj", ".fbx", ".gltf", ".glb", ".usdz"].iter().any(|e| f.ends_with(e))
}

/// `(outputs_count, preview_output)` of a history `outputs` object.
fn outputs_summary(outputs: &Json) -> (usize, Option<Json>) {
    let mut count = 0;
    let mut preview: Option<Json> = None;
    let mut fallback: Option<Json> = None;
    let Some(nodes) = outputs.as_object() else { return (0, None) };
    for (node_id, node_out) in nodes {
        let Some(node_out) = node_out.as_object() else { continue };
        for (media_type, items) in node_out {
            let Some(items) = items.as_array().filter(|_| media_type != "animated") else { continue };
            for item in items {
                let Some(obj) = item.as_object() else { continue };
                count += 1;
                if preview.is_some() || !previewable(media_type, obj) {
                    continue;
                }
                let mut e = obj.clone();
                e.insert("nodeId".into(), json!(node_id));
                if !obj.contains_key("mediaType") {
                    e.insert("mediaType".into(), json!(media_type));
                }
                if obj.get("type").and_then(Json::as_str) == Some("output") {
                    preview = Some(Json::Object(e));
                } else if fallback.is_none() {
                    fallback = Some(Json::Object(e));
                }
            }
        }
    }
    (count, preview.or(fallback))
}

/// A history entry as a job (`include_outputs` for `GET /api/jobs/{id}`).
pub fn history_job(prompt_id: &str, entry: &Json, create_time: Option<i64>, include_outputs: bool) -> Json {
    let p = &entry["prompt"];
    let status = &entry["status"];
    let mut start = None;
    let mut end = None;
    let mut error = None;
    if let Some(msgs) = status.get("messages").and_then(Json::as_array) {
        for m in msgs {
            let (Some(name), Some(data)) = (m.get(0).and_then(Json::as_str), m.get(1)) else { continue };
            match name {
                "execution_start" => start = data.get("timestamp").cloned(),
                "execution_success" | "execution_error" | "execution_interrupted" => {
                    end = data.get("timestamp").cloned();
                    if name == "execution_error" {
                        error = Some(data.clone());
                    }
                }
                _ => {}
            }
        }
    }
    let job_status = match status.get("status_str").and_then(Json::as_str) {
        Some("error") => "failed",
        _ => "completed",
    };
    let (count, preview) = outputs_summary(&entry["outputs"]);
    let mut j = Map::new();
    j.insert("id".into(), json!(prompt_id));
    j.insert("status".into(), json!(job_status));
    j.insert("priority".into(), p[0].clone());
    if let Some(t) = create_time {
        j.insert("create_time".into(), json!(t));
    }
    for (k, v) in [("execution_start_time", start), ("execution_end_time", end), ("execution_error", error)] {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            j.insert(k.into(), v);
        }
    }
    j.insert("outputs_count".into(), json!(count));
    if let Some(pv) = preview {
        j.insert("preview_output".into(), pv);
    }
    if let Some(w) = workflow_id(&p[3]) {
        j.insert("workflow_id".into(), w);
    }
    if include_outputs {
        j.insert("outputs".into(), entry["outputs"].clone());
        j.insert("execution_status".into(), status.clone());
        j.insert("workflow".into(), json!({"prompt": p[2], "extra_data": p[3]}));
    }
    Json::Object(j)
}

/// Filters, sorts and pages jobs (`jobs` in running, pending, history order).
pub fn jobs_page(jobs: Vec<Json>, q: &JobsQuery) -> Json {
    let mut jobs: Vec<Json> = jobs
        .into_iter()
        .filter(|j| {
            q.status.as_ref().is_none_or(|s| s.iter().any(|s| j["status"] == s.as_str()))
                && q.workflow_id.as_ref().is_none_or(|w| j["workflow_id"] == w.as_str())
        })
        .collect();
    let key = |j: &Json| -> i64 {
        if q.sort_by == "execution_duration" {
            let s = j["execution_start_time"].as_i64().unwrap_or(0);
            let e = j["execution_end_time"].as_i64().unwrap_or(0);
            if s != 0 && e != 0 {
                e - s
            } else {
                0
            }
        } else {
            j["create_time"].as_i64().unwrap_or(0)
        }
    };
    if q.sort_order == "desc" {
        jobs.sort_by_key(|j| std::cmp::Reverse(key(j)));
    } else {
        jobs.sort_by_key(key);
    }
    let total = jobs.len();
    let page: Vec<Json> = jobs.into_iter().skip(q.offset).take(q.limit.unwrap_or(usize::MAX)).collect();
    let has_more = q.offset + page.len() < total;
    json!({"jobs": page, "pagination": {"offset": q.offset, "limit": q.limit, "total": total, "has_more": has_more}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_cap_keeps_max_plus_one() {
        let mut h = History::new(3);
        for i in 0..10 {
            h.insert(&format!("p{i}"), json!({"i": i}), i);
        }
        assert_eq!(h.len(), 4);
        let page = h.page(None, -1);
        let keys: Vec<&String> = page.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["p6", "p7", "p8", "p9"]);
        // Overwriting keeps the position.
        h.insert("p7", json!({"i": 70}), 70);
        let page = h.page(None, -1);
        let keys: Vec<&String> = page.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["p7", "p8", "p9"].map(String::from).iter().collect::<Vec<_>>());
    }

    #[test]
    fn history_paging_like_comfyui() {
        let mut h = History::new(100);
        for i in 0..5 {
            h.insert(&format!("p{i}"), json!(i), i);
        }
        let keys = |v: Json| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(h.page(Some(2), -1)), ["p3", "p4"]);
        assert_eq!(keys(h.page(Some(2), 1)), ["p1", "p2"]);
        assert_eq!(keys(h.page(None, 3)), ["p3", "p4"]);
        assert_eq!(h.item("p9"), json!({}));
        assert_eq!(h.item("p1"), json!({"p1": 1}));
    }

    #[test]
    fn jobs_query_errors() {
        assert!(JobsQuery::parse([("status", "pending,bogus")])
            .unwrap_err()
            .starts_with("Invalid status value(s): bogus"));
        assert!(JobsQuery::parse([("limit", "0")]).is_err());
        assert!(JobsQuery::parse([("limit", "x")]).is_err());
        assert!(JobsQuery::parse([("sort_by", "name")]).is_err());
        assert_eq!(JobsQuery::parse([("offset", "-4")]).unwrap().offset, 0);
    }
}
