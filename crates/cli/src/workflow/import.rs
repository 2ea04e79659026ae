//! `import-workflow`: convert if needed, validate as `/prompt` would, save for the editor.

use std::path::PathBuf;

use comfy_graph::Folders;
use serde_json::Value as Json;

use super::load::{local_object_info, print_node_errors, print_validation_errors, read_workflow};
use crate::ImportArgs;

/// A file name for the user's workflow folder: no separators, `.json` appended.
pub fn workflow_file_name(name: &str) -> Option<String> {
    let stem = name.trim().trim_end_matches(".json");
    if stem.is_empty() || stem.contains('/') || stem.contains('\\') || stem.starts_with('.') || stem.contains('\0') {
        return None;
    }
    Some(format!("{stem}.json"))
}

/// `import-workflow`.
pub fn import_workflow(args: &ImportArgs) -> anyhow::Result<i32> {
    let wf = match read_workflow(&args.workflow) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let base = std::path::absolute(&args.base.base_directory)?;
    let folders = Folders::new(&base);
    let registry = comfy_nodes::registry();
    let info = local_object_info(&registry, &folders);
    let mut prompt = match wf.to_api(&info) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let api_prompt = prompt.clone();
    let v = comfy_graph::validate::validate_prompt(&registry, &folders, &mut prompt, None);
    if !v.ok() {
        let body = v.error_body();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        eprintln!("{}: the workflow does not validate:", args.workflow.display());
        print_validation_errors(&body);
        return Ok(1);
    }
    if !v.node_errors.is_empty() {
        eprintln!("warning: some outputs failed validation and would be skipped:");
        print_node_errors(&serde_json::json!({"node_errors": Json::Object(v.node_errors.clone())}));
    }
    let raw_name = match &args.name {
        Some(n) => n.clone(),
        None => args.workflow.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let Some(file_name) = workflow_file_name(&raw_name) else {
        eprintln!("invalid workflow name {raw_name:?} (use --name NAME without slashes)");
        return Ok(crate::EXIT_USAGE);
    };
    let user = args.user_directory.clone().map(std::path::absolute).transpose()?.unwrap_or_else(|| base.join("user"));
    let dir: PathBuf = user.join("default").join("workflows");
    std::fs::create_dir_all(&dir)?;
    let dest = dir.join(&file_name);
    if dest.exists() && !args.overwrite {
        eprintln!("{} already exists (use --overwrite to replace it, or --name)", dest.display());
        return Ok(1);
    }
    std::fs::write(&dest, serde_json::to_string_pretty(&wf.document)? + "\n")?;
    if let Some(out) = &args.api_output {
        std::fs::write(out, serde_json::to_string_pretty(&api_prompt)? + "\n")?;
        println!("API-format prompt written to {}", out.display());
    }
    println!(
        "valid {} workflow ({} nodes, outputs {}) saved to {}",
        if wf.ui { "UI-format" } else { "API-format" },
        api_prompt.as_object().map(|m| m.len()).unwrap_or(0),
        v.outputs.join(", "),
        dest.display()
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::workflow_file_name("my flow").as_deref(), Some("my flow.json"));
        assert_eq!(super::workflow_file_name("x.json").as_deref(), Some("x.json"));
        assert!(super::workflow_file_name("../x").is_none());
        assert!(super::workflow_file_name("").is_none());
    }
}
