//! End to end on the real LXD daemon with the polyglot image: `POST /run`
//! on held-out programs (a corpus built by tests/detection/sources.py from
//! sources the model never saw) runs the language that detection names,
//! through the same resolution path that `detect-accuracy` measures.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Harness;
use serde_json::json;
use unsandbox::languages::detect::{self, canonical};
use unsandbox::tools::accuracy;

/// Files taken per language (evenly spread), to keep the run short.
fn per_language() -> usize {
    std::env::var("UNSANDBOX_DETECTION_RUN_PER_LANGUAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// `(label, file)` of the corpus, up to [`per_language`] a language.
fn samples(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut languages: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    languages.sort();
    for l in languages {
        let label = l.file_name().unwrap().to_string_lossy().to_string();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&l)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort_by_key(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        });
        let step = (files.len() as f64 / per_language() as f64).max(1.0);
        for i in 0..per_language().min(files.len()) {
            out.push((label.clone(), files[(i as f64 * step) as usize].clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_executes_what_detection_names_on_held_out_programs() {
    let Some(dir) = std::env::var_os("UNSANDBOX_DETECTION_HELDOUT") else {
        eprintln!(
            "skipping run_executes_what_detection_names_on_held_out_programs: set UNSANDBOX_DETECTION_HELDOUT to a held-out corpus (tests/detection/README.md)"
        );
        return;
    };
    let test = "run_executes_what_detection_names_on_held_out_programs";
    let Some(h) = Harness::polyglot(test, "detectrun").await else {
        return;
    };
    h.wait_proven("default/polyglot").await;
    common::wait_for(
        "a warm polyglot container",
        Duration::from_secs(600),
        || {
            let n = h.warm("default/polyglot");
            async move { n >= 1 }
        },
    )
    .await;

    let served = accuracy::served();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    let mut wrong_path = Vec::new();
    let mut failed_runs = Vec::new();
    let mut wrong = Vec::new();
    let all = samples(Path::new(&dir));
    for (label, path) in &all {
        let code = std::fs::read_to_string(path).unwrap();
        let expected = detect::detect(&code, &served);
        let (status, body) = h
            .call("POST", "/run", Some(&json!({"code": code}).to_string()))
            .await;
        let name = path.strip_prefix(&dir).unwrap().display().to_string();
        match expected {
            Some(d) if d.is_sure() => {
                // What detection names is what /run runs.
                if status.as_u16() != 200 || body["language"] != json!(d.language) {
                    wrong_path.push(format!(
                        "{name}: detection {}, /run {status} {body}",
                        d.language
                    ));
                    continue;
                }
                let right = canonical(&d.language) == canonical(label);
                let ok = body["status"] == "ok" && body["exit_code"] == 0;
                let key = match (right, ok) {
                    (true, true) => "right language, ran to exit 0",
                    (true, false) => "right language, did not exit 0",
                    (false, _) => "wrong language",
                };
                *tally.entry(key).or_default() += 1;
                if !right {
                    wrong.push(format!("{name}: ran as {}", d.language));
                }
                if right && !ok {
                    failed_runs.push(format!(
                        "{name} ({}): {} exit {} {}",
                        d.language,
                        body["status"],
                        body["exit_code"],
                        body["compile"]["stderr"]
                            .as_str()
                            .unwrap_or(body["stderr"].as_str().unwrap_or_default())
                            .chars()
                            .take(160)
                            .collect::<String>()
                    ));
                }
            }
            _ => {
                // Unsure or nothing found: refused, never guessed.
                let code = body["error"].as_str().unwrap_or_default();
                if status.as_u16() != 422
                    || !["language_uncertain", "invalid_request"].contains(&code)
                {
                    wrong_path.push(format!("{name}: unsure, yet /run answered {status} {body}"));
                    continue;
                }
                *tally.entry("refused as uncertain (422)").or_default() += 1;
            }
        }
    }
    println!(
        "/run on {} held-out programs from {}:",
        all.len(),
        Path::new(&dir).display()
    );
    for (k, n) in &tally {
        println!("  {k}: {n}");
    }
    for w in &wrong {
        println!("  wrong language: {w}");
    }
    for f in &failed_runs {
        println!("  did not exit 0: {f}");
    }
    assert!(
        wrong_path.is_empty(),
        "/run did not run what detection names:\n{}",
        wrong_path.join("\n")
    );
    h.finish().await;
}
