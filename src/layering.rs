//! Keeps the layering of the crate doc true: reads every file under `src/`
//! and fails on an import of a module from a higher layer, or on modules
//! of one layer importing each other in a cycle.
//!
//! An import is any `crate::m` or `super::…::m` path that reaches the
//! top-level module `m`, in `use` or inline; comments and string literals
//! do not count. Test code (`#[cfg(test)]` items and the files they
//! declare) is not part of the layering: a test may check how a lower
//! layer's value looks to a higher one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, bottom layer first. A module may import modules of
/// its own layer (without a cycle) and of the layers below.
const LAYERS: &[&[&str]] = &[
    &[
        "crd",
        "lxd",
        "egress",
        "metrics",
        "telemetry",
        "languages",
        "settings",
        "http_error",
    ],
    &["execution", "agent", "controller"],
    &["api", "cluster", "standalone", "auth", "service"],
    &["tools"],
    &["cli"],
];

/// An import that breaks the layering and is known, with why it is still
/// there. Remove the entry together with the import; the test fails when
/// an entry no longer matches anything, so none outlives its import.
struct Exception {
    /// The importing file, from the crate root (`src/…`).
    file: &'static str,
    /// The top-level module it imports.
    imports: &'static str,
    why: &'static str,
}

const TEMPORARY_EXCEPTIONS: &[Exception] = &[];

/// One import of a top-level module, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    module: String,
    line: usize,
}

/// The source with comments and the contents of string and character
/// literals blanked out; line breaks stay, so lines still count.
fn code_only(src: &str) -> Vec<char> {
    let s: Vec<char> = src.chars().collect();
    let mut out = s.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < s.len() {
        let next = s.get(i + 1).copied();
        if s[i] == '/' && next == Some('/') {
            let end = (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len());
            blank(&mut out, i, end);
            i = end;
        } else if s[i] == '/' && next == Some('*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < s.len() && depth > 0 {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 1;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 1;
                }
                j += 1;
            }
            blank(&mut out, i, j);
            i = j;
        } else if (s[i] == 'r' || (s[i] == 'b' && next == Some('r')))
            && (i == 0 || !ident(s[i - 1]))
            && {
                let mut j = i + if s[i] == 'b' { 2 } else { 1 };
                while s.get(j) == Some(&'#') {
                    j += 1;
                }
                s.get(j) == Some(&'"')
            }
        {
            let start = i + if s[i] == 'b' { 2 } else { 1 };
            let hashes = (start..s.len()).take_while(|&j| s[j] == '#').count();
            let mut j = start + hashes + 1;
            while j < s.len() && !(s[j] == '"' && (1..=hashes).all(|h| s.get(j + h) == Some(&'#')))
            {
                j += 1;
            }
            blank(&mut out, start + hashes + 1, j);
            i = j + 1 + hashes;
        } else if s[i] == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else if s[i] == '\'' && (next == Some('\\') || s.get(i + 2) == Some(&'\'')) {
            // A character literal, not a lifetime.
            let mut j = if next == Some('\\') { i + 3 } else { i + 2 };
            while j < s.len() && s[j] != '\'' {
                j += 1;
            }
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn starts_with(code: &[char], at: usize, word: &str) -> bool {
    word.chars()
        .enumerate()
        .all(|(k, c)| code.get(at + k) == Some(&c))
}

fn skip_space(code: &[char], mut at: usize) -> usize {
    while at < code.len() && code[at].is_whitespace() {
        at += 1;
    }
    at
}

fn ident_at(code: &[char], at: usize) -> String {
    code[at.min(code.len())..]
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_')
        .collect()
}

/// Blanks out every `#[cfg(test)]` item; returns the names of the test
/// modules declared in other files (`#[cfg(test)] mod name;`).
fn drop_test_items(code: &mut [char]) -> Vec<String> {
    let mut files = Vec::new();
    let attr = "#[cfg(test)]";
    let mut i = 0;
    while i < code.len() {
        if !starts_with(code, i, attr) {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = skip_space(code, i + attr.len());
        // Further attributes of the same item.
        while code.get(j) == Some(&'#') {
            let mut depth = 0;
            while j < code.len() {
                match code[j] {
                    '[' => depth += 1,
                    ']' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            j = skip_space(code, j + 1);
        }
        let item = j;
        let mut depth = 0i32;
        let end = loop {
            match code.get(j) {
                None => break code.len(),
                Some('(' | '[') => depth += 1,
                Some(')' | ']') => depth -= 1,
                Some(';') if depth == 0 => {
                    let words: String = code[item..j].iter().collect();
                    let words: Vec<&str> = words.split_whitespace().collect();
                    if let Some(p) = words.iter().position(|w| *w == "mod") {
                        files.extend(words.get(p + 1).map(|n| n.to_string()));
                    }
                    break j + 1;
                }
                Some('{') if depth == 0 => {
                    let mut braces = 0;
                    while j < code.len() {
                        match code[j] {
                            '{' => braces += 1,
                            '}' => {
                                braces -= 1;
                                if braces == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                    break j + 1;
                }
                _ => {}
            }
            j += 1;
        };
        let end = end.min(code.len());
        for c in &mut code[start..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end;
    }
    files
}

/// The first segment of every path in the group `{…}` starting at `at`.
fn group_heads(code: &[char], at: usize) -> Vec<(String, usize)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect = true;
    let mut j = at;
    while j < code.len() {
        match code[j] {
            '{' => {
                depth += 1;
                expect = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect = true,
            c if expect && depth == 1 && (c.is_alphabetic() || c == '_') => {
                heads.push((ident_at(code, j), j));
                expect = false;
            }
            _ => {}
        }
        j += 1;
    }
    heads
}

/// Top-level modules that the code of the module at `path` (its segments
/// below the crate root) imports.
fn imports(code: &[char], path: &[String]) -> Vec<Import> {
    let line = |at: usize| 1 + code[..at].iter().filter(|c| **c == '\n').count();
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let boundary = i == 0 || !(code[i - 1].is_alphanumeric() || code[i - 1] == '_');
        let (mut rest, mut at) = if boundary && starts_with(code, i, "crate::") {
            (Vec::new(), i + "crate::".len())
        } else if boundary && starts_with(code, i, "super::") {
            let mut rest = path.to_vec();
            let mut at = i;
            while starts_with(code, at, "super::") {
                rest.pop();
                at += "super::".len();
            }
            (rest, at)
        } else {
            i += 1;
            continue;
        };
        at = skip_space(code, at);
        if let Some(top) = rest.first() {
            found.push(Import {
                module: top.clone(),
                line: line(i),
            });
        } else if code.get(at) == Some(&'{') {
            for (name, pos) in group_heads(code, at) {
                found.push(Import {
                    module: name,
                    line: line(pos),
                });
            }
        } else {
            rest.push(ident_at(code, at));
            found.push(Import {
                module: rest.remove(0),
                line: line(i),
            });
        }
        i = at.max(i + 1);
    }
    found
}

/// Every file of the library under `root` (`src/`), with its module path.
fn library_files(root: &Path) -> Vec<(PathBuf, Vec<String>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(root, &mut files);
    files.sort();
    files
        .into_iter()
        // The binaries' roots are crates of their own.
        .filter(|f| f != &root.join("main.rs") && !f.starts_with(root.join("bin")))
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap().with_extension("");
            let mut path: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            (f, path)
        })
        .collect()
}

/// Where a module's file declares its child `name`.
fn child_files(file: &Path, path: &[String], name: &str) -> [PathBuf; 2] {
    let dir = if path.is_empty() || file.ends_with("mod.rs") {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The modules reachable from `from` along `edges`.
fn reachable(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        for next in edges.get(&m).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

/// Every group of modules that import each other in a cycle along `edges`
/// (the strongly connected components with more than one module).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<BTreeSet<String>> {
    let reach: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reachable(edges, m))).collect();
    reach
        .iter()
        .map(|(m, from_m)| {
            from_m
                .iter()
                .filter(|o| reach.get(o).is_some_and(|r| r.contains(*m)))
                .cloned()
                .collect::<BTreeSet<String>>()
        })
        .filter(|group| group.len() > 1)
        .collect()
}

#[test]
fn every_module_imports_only_its_layer_and_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Test code first: it is left out, and so are the files it declares.
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    let mut files = Vec::new();
    for (file, path) in library_files(&root) {
        let mut code = code_only(&std::fs::read_to_string(&file).unwrap());
        for name in drop_test_items(&mut code) {
            test_only.extend(child_files(&file, &path, &name));
        }
        files.push((file, path, code));
    }
    files.retain(|(file, _, _)| !test_only.contains(file));
    let mut problems = Vec::new();
    let mut used = vec![false; TEMPORARY_EXCEPTIONS.len()];
    let mut same_layer: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(_, p, _)| p.first().cloned())
        .collect();
    for m in &modules {
        if layer_of(m).is_none() {
            problems.push(format!("module {m} has no layer in LAYERS"));
        }
    }
    for (file, path, code) in &files {
        let Some(from) = path.first() else { continue };
        let shown = Path::new("src").join(file.strip_prefix(&root).unwrap());
        for import in imports(code, path) {
            let to = &import.module;
            if to == from || !modules.contains(to) {
                continue;
            }
            let (Some(lf), Some(lt)) = (layer_of(from), layer_of(to)) else {
                continue;
            };
            if let Some(k) = TEMPORARY_EXCEPTIONS
                .iter()
                .position(|e| Path::new(e.file) == shown && e.imports == to)
            {
                used[k] = true;
                continue;
            }
            if lt > lf {
                problems.push(format!(
                    "{}:{}: {from} (layer {lf}) imports {to} (layer {lt}, above it)",
                    shown.display(),
                    import.line
                ));
            } else if lt == lf {
                same_layer
                    .entry(from.clone())
                    .or_default()
                    .insert(to.clone());
            }
        }
    }
    for group in cycles(&same_layer) {
        let imports: Vec<String> = group
            .iter()
            .flat_map(|a| {
                same_layer[a]
                    .iter()
                    .filter(|b| group.contains(*b))
                    .map(move |b| format!("{a} -> {b}"))
            })
            .collect();
        problems.push(format!(
            "modules of one layer import each other in a cycle: {}",
            imports.join(", ")
        ));
    }
    for (e, used) in TEMPORARY_EXCEPTIONS.iter().zip(used) {
        if !used {
            problems.push(format!(
                "{} no longer imports {}: remove its exception ({})",
                e.file, e.imports, e.why
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[cfg(test)]
mod scanner {
    use super::*;

    fn modules(src: &str, path: &[&str]) -> Vec<String> {
        let mut code = code_only(src);
        drop_test_items(&mut code);
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        imports(&code, &path)
            .into_iter()
            .map(|i| i.module)
            .collect()
    }

    #[test]
    fn finds_plain_grouped_inline_and_relative_imports() {
        let src = "use crate::agent::keys;\nuse crate::{api::ApiError, crd};\n\
                   fn f() { crate::lxd::default_socket(); }\n\
                   use super::super::cluster::peers;\nuse super::sibling;\n";
        assert_eq!(
            modules(src, &["execution", "script"]),
            ["agent", "api", "crd", "lxd", "cluster", "execution"]
        );
    }

    #[test]
    fn ignores_comments_strings_and_test_code() {
        let src = "//! See crate::api.\n/* crate::cli */\nconst S: &str = \"crate::tools\";\n\
                   const R: &str = r#\"crate::tools \"quoted\"\"#;\nconst C: char = '{';\nconst Q: char = '\\'';\n\
                   fn g<'a>(x: &'a str) -> &'a str { x }\n\
                   #[cfg(test)]\nfn fixture() -> u8 { crate::cluster::X }\n\
                   #[cfg(test)]\nmod tests {\n    use crate::api::ApiError;\n}\n\
                   use crate::crd::Pool;\n";
        assert_eq!(modules(src, &["agent", "lease"]), ["crd"]);
    }

    #[test]
    fn test_modules_in_their_own_files_are_named() {
        let mut code = code_only("#[cfg(test)]\nmod runner_tests;\npub mod run;\n");
        assert_eq!(drop_test_items(&mut code), ["runner_tests"]);
        let file = Path::new("/x/src/execution/mod.rs");
        assert_eq!(
            child_files(file, &["execution".into()], "runner_tests")[0],
            Path::new("/x/src/execution/runner_tests.rs")
        );
        let file = Path::new("/x/src/api/piston.rs");
        assert_eq!(
            child_files(file, &["api".into(), "piston".into()], "tests")[0],
            Path::new("/x/src/api/piston/tests.rs")
        );
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let edges = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (a, b) in pairs {
                m.entry(a.to_string()).or_default().insert(b.to_string());
            }
            m
        };
        assert!(cycles(&edges(&[("api", "cluster"), ("cluster", "auth")])).is_empty());
        let found = cycles(&edges(&[
            ("api", "cluster"),
            ("cluster", "standalone"),
            ("standalone", "api"),
            ("api", "auth"),
        ]));
        let group: BTreeSet<String> = ["api", "cluster", "standalone"].map(String::from).into();
        assert_eq!(found, [group].into());
    }

    #[test]
    fn every_layer_names_distinct_modules() {
        let all: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
        let distinct: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(all.len(), distinct.len());
    }
}
