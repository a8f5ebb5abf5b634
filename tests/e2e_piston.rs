//! End to end on the real LXD daemon: the Piston-compatible API driven by
//! the real npm package `piston-client` (tests/piston/check.mjs) over a real
//! socket, plus the raw HTTP answers a client library hides.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::{Harness, resources};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use unsandbox::crd::LanguageSpec;

const POOL: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 2\n  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    wallTimeMs: {default: 5000, max: 10000}\n    queueTimeoutMs: 60000\n";

/// A "compiled" shell: the compile stage checks the syntax and produces the
/// executable the run stage runs. It reports no version.
fn bashc() -> LanguageSpec {
    serde_yaml::from_str(
        r##"
name: bashc
sourceFile: main.sh
compile: bash -n main.sh && cp main.sh main && chmod 700 main
run: ./main
smokeTests:
  - name: args
    code: "#!/bin/bash\necho \"$@\""
    args: [a, b]
    expectedStdout: "a b\n"
"##,
    )
    .unwrap()
}

/// Runs tests/piston/check.mjs against `url`, installing its locked
/// dependencies first when they are missing.
async fn piston_client(url: &str) -> Value {
    node_script("check.mjs", &[url]).await
}

/// Runs `script` of tests/piston with `args`, installing its locked
/// dependencies first when they are missing; what it printed, as JSON.
async fn node_script(script: &str, args: &[&str]) -> Value {
    let dir = common::root().join("tests/piston");
    if !dir.join("node_modules/piston-client").exists() {
        let status = tokio::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .await
            .expect("npm is needed to install piston-client");
        assert!(status.success(), "npm ci in {}", dir.display());
    }
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("node")
            .arg(Path::new(&dir).join(script))
            .args(args)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} finished within 10 minutes"))
    .expect("node is needed to run piston-client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{script} printed {stdout}: {e}"))
}

/// A raw request with any content type, as the router answers it.
async fn raw(h: &Harness, method: &str, path: &str, ctype: &str, body: &str) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ctype)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = h.router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piston_client_runs_code_unchanged() {
    let mut res = resources(POOL);
    res.images[0].spec.languages.push(bashc());
    let h = Harness::start("piston", res).await;
    h.wait_warm("t/small", 2).await;

    // What a client library hides: status codes and error bodies.
    let (s, b) = raw(
        &h,
        "POST",
        "/api/v2/execute",
        "application/json",
        r#"{"language": "cobol", "files": [{"content": "x"}]}"#,
    )
    .await;
    assert_eq!(
        (s, b.clone()),
        (400, json!({"message": "cobol-* runtime is unknown"})),
        "{b}"
    );
    let (s, b) = raw(
        &h,
        "POST",
        "/api/v2/execute",
        "application/json",
        r#"{"language": "python", "version": "3.x", "files": []}"#,
    )
    .await;
    assert_eq!(
        (s, &b["message"]),
        (
            400,
            &json!("files must include at least one utf8 encoded file")
        ),
        "{b}"
    );
    let (s, b) = raw(
        &h,
        "POST",
        "/api/v2/execute",
        "application/json",
        "{\"language\": ",
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("not valid JSON"),
        "{b}"
    );
    let (s, b) = raw(
        &h,
        "POST",
        "/api/v2/execute",
        "text/plain",
        r#"{"files": []}"#,
    )
    .await;
    assert_eq!(
        (s, b.clone()),
        (400, json!({"message": "language is required as a string"})),
        "{b}"
    );
    // piston-client posts JSON as text/plain: it runs.
    let (s, b) = raw(&h, "POST", "/api/v2/execute", "text/plain;charset=UTF-8", r#"{"language": "lua", "version": "*", "files": [{"content": "print(io.read())"}], "stdin": "raw"}"#).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["run"]["stdout"], "raw\n", "{b}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, h.router.clone()).into_future());
    let r = piston_client(&url).await;
    server.abort();
    eprintln!("piston-client saw: {r:#}");

    let runtimes = r["runtimes"].as_array().unwrap_or_else(|| panic!("{r}"));
    let version_of = |l: &str| {
        runtimes
            .iter()
            .find(|x| x["language"] == l)
            .unwrap_or_else(|| panic!("{l} in {runtimes:?}"))["version"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for l in ["python", "bash", "lua"] {
        let v = version_of(l);
        assert!(v != "0.0.0" && v.split('.').count() >= 2, "{l} {v}");
    }
    assert_eq!(version_of("bashc"), "0.0.0", "no version reported");
    let py = runtimes.iter().find(|x| x["language"] == "python").unwrap();
    assert!(
        py["aliases"].as_array().unwrap().contains(&json!("py")),
        "{py}"
    );

    let run = &r["stdin"]["run"];
    assert_eq!(r["stdin"]["language"], "python", "{r}");
    assert_eq!(r["stdin"]["version"], version_of("python"));
    assert_eq!(run["stdout"], "hello piston\n", "{run}");
    assert_eq!(run["output"], "hello piston\n");
    assert_eq!(
        (&run["code"], &run["signal"], &run["status"]),
        (&json!(0), &Value::Null, &Value::Null),
        "{run}"
    );
    assert!(r["stdin"].get("compile").is_none());

    // An alias leaves the version out in piston-client; its default args show.
    assert_eq!(r["alias"]["language"], "python", "{r}");
    assert_eq!(r["alias"]["run"]["stdout"], "['1', '2', '3']\n");

    let run = &r["error"]["run"];
    assert_eq!(
        (&run["code"], &run["status"], &run["signal"]),
        (&json!(1), &json!("RE"), &Value::Null),
        "{run}"
    );
    assert!(
        run["stderr"].as_str().unwrap().contains("ValueError: boom"),
        "{run}"
    );
    assert_eq!(run["output"], run["stderr"]);

    let run = &r["timeout"]["run"];
    assert_eq!(
        (&run["status"], &run["signal"], &run["code"]),
        (&json!("TO"), &json!("SIGKILL"), &Value::Null),
        "{run}"
    );
    assert!(run["wall_time"].as_u64().unwrap() >= 1000, "{run}");

    assert_eq!(
        r["unknown"],
        json!({"message": "cobol-* runtime is unknown"})
    );
    assert_eq!(
        r["wrong_version"],
        json!({"message": "lua-9.9.9 runtime is unknown"})
    );
    assert_eq!(r["version_range"]["run"]["stdout"], "Lua 5.4\n", "{r}");
    assert_eq!(r["args"]["run"]["stdout"], "2:a b c\n", "{r}");
    assert_eq!(
        r["files"]["run"]["stdout"], "42 from-base64 from-hex\n",
        "{r}"
    );

    let (compile, run) = (&r["compiled"]["compile"], &r["compiled"]["run"]);
    assert_eq!(
        (&compile["code"], &compile["status"]),
        (&json!(0), &Value::Null),
        "{compile}"
    );
    assert!(
        compile["cpu_time"].is_u64() && compile["wall_time"].is_u64(),
        "{compile}"
    );
    assert_eq!(run["stdout"], "compiled in arg\n", "{run}");
    assert_eq!(r["compiled"]["version"], "0.0.0");

    // A failed compile: no run stage, and Piston repeats the compile stage as `run`.
    let (compile, run) = (&r["compile_error"]["compile"], &r["compile_error"]["run"]);
    assert_ne!(compile["code"], 0, "{compile}");
    assert_eq!(compile["status"], "RE", "{compile}");
    assert!(
        compile["stderr"].as_str().unwrap().contains("syntax error"),
        "{compile}"
    );
    assert_eq!(run, compile);

    // CPU time and peak memory are measured from the container's cgroup.
    let run = &r["busy"]["run"];
    assert_eq!(run["status"], Value::Null, "{run}");
    let cpu = run["cpu_time"]
        .as_u64()
        .unwrap_or_else(|| panic!("cpu_time: {run}"));
    let memory = run["memory"]
        .as_u64()
        .unwrap_or_else(|| panic!("memory: {run}"));
    assert!(cpu >= 50, "a busy loop used {cpu} ms of CPU: {run}");
    assert!(
        memory >= 40 * 1024 * 1024,
        "a 40 MiB buffer peaked at {memory} bytes: {run}"
    );
    assert!(
        memory <= 128 * 1024 * 1024,
        "within the pool's 128 MiB: {memory}"
    );

    let m = r["too_much_memory"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(
        m,
        format!(
            "run_memory_limit cannot exceed the configured limit of {}",
            128 * 1024 * 1024
        )
    );

    // The native API reports the same measurements.
    let (s, b) = h.execute("python", json!({"code": "print(1)"})).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b["timings"]["cpu_ms"].is_u64() && b["timings"]["memory_bytes"].is_u64(),
        "{b}"
    );

    h.finish().await;
}

/// A pool with enough warm containers for a batch of short executions.
const BATCH: &str = "apiVersion: unsandbox.com/v1alpha1\nkind: ExecutorPool\nmetadata: {name: small, namespace: t}\nspec:\n  image: small\n  warm: 4\n  limits: {memoryMib: 128, processes: 32, tmpfsMib: 16}\n  execution:\n    queueTimeoutMs: 60000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals_are_the_programs_as_piston_reports_them() {
    use futures::StreamExt;
    let mut res = resources(BATCH);
    // A language whose runner cannot start: `setpriv` is not on its PATH.
    res.images[0].spec.languages.push(
        serde_yaml::from_str(
            "{name: runnerless, sourceFile: main.sh, run: bash main.sh, env: {PATH: /nowhere}}",
        )
        .unwrap(),
    );
    let h = Harness::start("piston-statuses", res).await;
    h.wait_warm("t/small", 4).await;

    // (language, code, expected {code, signal, status}); each prints
    // "before" on stdout and "oops" on stderr first.
    let mut cases: Vec<(&str, String, Value)> = Vec::new();
    for n in [0, 1, 2, 125, 126, 127, 128, 255] {
        let status = if n == 0 { Value::Null } else { json!("RE") };
        cases.push((
            "bash",
            format!("echo before; echo oops >&2; exit {n}"),
            json!({"code": n, "signal": null, "status": status}),
        ));
    }
    let re = |n: i32| json!({"code": n, "signal": null, "status": "RE"});
    cases.push((
        "bash",
        "echo before; echo oops >&2; no-such-command".into(),
        re(127),
    ));
    cases.push((
        "python",
        "import sys\nprint('before')\nsys.stderr.write('oops\\n')\nsys.exit(126)".into(),
        re(126),
    ));
    let head = "import os, signal, sys\nprint('before', flush=True)\nsys.stderr.write('oops\\n')\nsys.stderr.flush()\n";
    let signals = [
        (1, "SIGHUP"),
        (2, "SIGINT"),
        (3, "SIGQUIT"),
        (4, "SIGILL"),
        (6, "SIGABRT"),
        (7, "SIGBUS"),
        (8, "SIGFPE"),
        (9, "SIGKILL"),
        (11, "SIGSEGV"),
        (13, "SIGPIPE"),
        (15, "SIGTERM"),
    ];
    let sg = |name: &str| json!({"code": null, "signal": name, "status": "SG"});
    for (s, name) in signals {
        cases.push((
            "python",
            format!("{head}if {s} != 9: signal.signal({s}, signal.SIG_DFL)\nos.kill(os.getpid(), {s})\nsignal.pause()"),
            sg(name),
        ));
    }
    cases.push((
        "python",
        format!("{head}import faulthandler\nfaulthandler._sigsegv()"),
        sg("SIGSEGV"),
    ));
    cases.push(("python", format!("{head}os.abort()"), sg("SIGABRT")));

    let hr = &h;
    let answers: Vec<_> = futures::stream::iter(cases)
        .map(|(lang, code, want)| async move {
            let body = json!({"language": lang, "version": "*", "files": [{"content": code}]});
            let (s, b) = raw(
                hr,
                "POST",
                "/api/v2/execute",
                "application/json",
                &body.to_string(),
            )
            .await;
            (lang, code, want, s, b)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for (lang, code, want, s, b) in answers {
        assert_eq!(s, 200, "{b}");
        let run = &b["run"];
        let got = json!({"code": run["code"], "signal": run["signal"], "status": run["status"]});
        assert_eq!(got, want, "{lang}: {code}\n{b}");
        assert_eq!(run["stdout"], "before\n", "{lang}: {code}\n{b}");
        assert!(
            run["stderr"].as_str().unwrap().starts_with("oops\n"),
            "{lang}: {code}\n{b}"
        );
    }
    // The runner's own command not found is unsandbox's failure: XX.
    let body = json!({"language": "runnerless", "version": "*", "files": [{"content": "echo hi"}]});
    let (s, b) = raw(
        &h,
        "POST",
        "/api/v2/execute",
        "application/json",
        &body.to_string(),
    )
    .await;
    assert_eq!((s, &b["run"]["status"]), (200, &json!("XX")), "{b}");
    h.finish().await;
}

/// Where the polyglot image and Piston's own test programs differ on
/// purpose: (Piston's runtime name, why).
const DIFFERENCES: &[(&str, &str)] = &[
    (
        "scala",
        "Scala 3 syntax (`@main def`): Debian bookworm packages Scala 2.11, so the image has no Scala 3",
    ),
    (
        "vb",
        "Visual Basic .NET (Piston's dotnet and mono `vb`): the image has no VB.NET compiler; its `basic` is yabasic, another BASIC",
    ),
    (
        "bas",
        "FreeBASIC (Piston's `bas`, alias `basic`): not packaged by Debian; the image's `basic` is yabasic, another BASIC",
    ),
];

/// One of Piston's package test programs: the newest version of a
/// package, the runtime name Piston's CI runs it with (the second part of
/// its file name, `test.nasm64.asm` → `nasm64`), and every name Piston
/// gives that runtime's language.
struct PistonTest {
    package: String,
    runtime: String,
    names: Vec<String>,
    content: String,
}

/// Reads Piston's `packages/` directory: each package's newest version's
/// `test.*` files.
fn piston_tests(packages: &Path) -> Vec<PistonTest> {
    fn version_key(v: &str) -> Vec<(u8, u64, String)> {
        v.split(['.', '-'])
            .map(|p| match p.parse::<u64>() {
                Ok(n) => (0, n, String::new()),
                Err(_) => (1, 0, p.to_string()),
            })
            .collect()
    }
    let mut out = vec![];
    let mut dirs: Vec<_> = std::fs::read_dir(packages)
        .expect("UNSANDBOX_PISTON_PACKAGES is a directory")
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    dirs.sort_by_key(|e| e.file_name());
    for pkg in dirs {
        let newest = std::fs::read_dir(pkg.path())
            .unwrap()
            .flatten()
            .filter(|v| v.path().join("metadata.json").exists())
            .max_by_key(|v| version_key(&v.file_name().to_string_lossy()));
        let Some(version) = newest else { continue };
        let meta: Value = serde_json::from_str(
            &std::fs::read_to_string(version.path().join("metadata.json")).unwrap(),
        )
        .unwrap();
        let provides: Vec<Value> = match meta["provides"].as_array() {
            Some(p) => p.clone(),
            None => vec![meta.clone()],
        };
        let mut files: Vec<_> = std::fs::read_dir(version.path())
            .unwrap()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().to_string())
            .filter(|f| f.starts_with("test."))
            .collect();
        files.sort();
        for file in files {
            let runtime = file.split('.').nth(1).unwrap_or_default().to_string();
            let names_of = |p: &Value| -> Vec<String> {
                std::iter::once(&p["language"])
                    .chain(p["aliases"].as_array().into_iter().flatten())
                    .filter_map(|n| n.as_str().map(str::to_ascii_lowercase))
                    .collect()
            };
            // The language this runtime name stands for in the package.
            let Some(names) = provides.iter().map(names_of).find(|n| n.contains(&runtime)) else {
                continue;
            };
            let content = std::fs::read_to_string(version.path().join(&file)).unwrap_or_default();
            out.push(PistonTest {
                package: pkg.file_name().to_string_lossy().to_string(),
                runtime,
                names,
                content,
            });
        }
    }
    out
}

/// Piston's own test programs, each of which prints `OK`, run through the
/// Piston API by the unmodified piston-client (its default arguments
/// included) on the polyglot image: every one whose language this image
/// serves must print `OK`, under the runtime name Piston's CI uses, unless
/// `DIFFERENCES` says why not. Needs a checkout of engineer-man/piston
/// (`UNSANDBOX_PISTON_PACKAGES=…/packages`) and the polyglot image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pistons_own_test_programs_print_ok() {
    let Some(packages) = std::env::var_os("UNSANDBOX_PISTON_PACKAGES") else {
        eprintln!(
            "skipping pistons_own_test_programs_print_ok: set UNSANDBOX_PISTON_PACKAGES to the packages/ directory of a checkout of engineer-man/piston"
        );
        return;
    };
    let Some(h) = Harness::polyglot("pistons_own_test_programs_print_ok", "pistonconf").await
    else {
        return;
    };
    let tests = piston_tests(Path::new(&packages));
    let agent = h.agent.clone();
    common::wait_for(
        "the polyglot languages to be proven",
        Duration::from_secs(900),
        || {
            let agent = agent.clone();
            async move {
                agent.reports().iter().any(|r| {
                    r.node.languages.len() + r.node.unavailable_languages.len() >= 70
                        && r.node
                            .unavailable_languages
                            .iter()
                            .all(|u| !u.message.contains("not finished"))
                })
            }
        },
    )
    .await;
    // Containers of this big image take about 10 s each to create.
    common::wait_for(
        "a warm polyglot container",
        Duration::from_secs(600),
        || {
            let n = h.warm("default/polyglot");
            async move { n >= 1 }
        },
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, h.router.clone()).into_future());

    // Which tests this image serves: one of Piston's names for the
    // runtime's language is a name or alias of a language served here.
    let (_, runtimes) = raw(&h, "GET", "/api/v2/runtimes", "application/json", "").await;
    let ours: Vec<Vec<String>> = runtimes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            std::iter::once(&r["language"])
                .chain(r["aliases"].as_array().into_iter().flatten())
                .filter_map(|n| n.as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .collect();
    let served: Vec<&PistonTest> = tests
        .iter()
        .filter(|t| ours.iter().any(|o| o.iter().any(|n| t.names.contains(n))))
        .collect();
    let cases: Vec<Value> = served
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i.to_string(), "language": t.runtime, "content": t.content}))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&cases).unwrap()).unwrap();
    let results = node_script("conformance.mjs", &[&url, file.path().to_str().unwrap()]).await;
    server.abort();

    let (mut failed, mut passed) = (vec![], 0);
    println!("| package | runtime | result |\n| --- | --- | --- |");
    for (i, t) in served.iter().enumerate() {
        let r = &results[i.to_string()];
        let stdout = r["run"]["stdout"].as_str().unwrap_or_default();
        let ok = stdout.contains("OK");
        let why = DIFFERENCES
            .iter()
            .find(|(n, _)| *n == t.runtime)
            .map(|(_, w)| *w);
        passed += usize::from(ok);
        let verdict = match (ok, why) {
            (true, _) => "OK".to_string(),
            (false, Some(w)) => format!("differs on purpose: {w}"),
            (false, None) => {
                failed.push(format!("{} ({}): {r}", t.runtime, t.package));
                format!(
                    "FAILED: {}",
                    r.to_string().chars().take(300).collect::<String>()
                )
            }
        };
        println!("| {} | {} | {verdict} |", t.package, t.runtime);
    }
    println!(
        "Piston's test programs: {passed} of {} served here print OK ({} of Piston's are for languages this image does not serve)",
        served.len(),
        tests.len() - served.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    h.finish().await;
}
