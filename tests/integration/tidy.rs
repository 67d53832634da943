//! Rules about the test suite itself, checked over its source.

use std::path::{Path, PathBuf};

use crate::support::env::root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the tests directory lists") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Tests never run the binary in the repository: there it would read a `healthpull.yaml`
/// or `healthpull.db` left by running the server (the setup page's choices would change
/// snapshot results). They run it in a `Sandbox` or a temporary directory of their own,
/// named with `current_dir` wherever the command is built.
#[test]
fn no_test_runs_the_binary_in_the_repository() {
    let mut files = Vec::new();
    rust_files(&root().join("tests/integration"), &mut files);
    let forbidden = [
        "current_dir(root())",
        "current_dir(env::root())",
        "current_dir(crate::support::env::root())",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a test file reads");
        for (n, line) in text.lines().enumerate() {
            // This file names the patterns it forbids.
            if file.ends_with("tidy.rs") {
                continue;
            }
            if forbidden.iter().any(|f| line.replace(' ', "").contains(f)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    // A run without a directory of its own runs in the repository too (the test's
    // working directory): every command built for the binary names its directory before
    // it is run or handed on.
    for file in &files {
        if file.ends_with("tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a test file reads");
        for (at, _) in text.match_indices("healthpull_bin())") {
            let start = text[..at].rfind("Command::new(");
            if start.is_none_or(|s| text[s..at].contains('\n')) {
                continue;
            }
            let rest = &text[at..];
            let end = [".spawn()", ".output()", ".status()", "\n    }\n", "\n}\n"]
                .iter()
                .filter_map(|stop| rest.find(stop))
                .min()
                .unwrap_or(rest.len());
            if !rest[..end].contains(".current_dir(") {
                let line = text[..at].lines().count();
                found.push(format!(
                    "{}:{line}: the binary runs without .current_dir(...)",
                    file.display()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "tests that run the binary in the repository (use support::env::Sandbox):\n{}",
        found.join("\n")
    );
}

/// One transport, injected: only `src/http.rs` builds or names an HTTP client; every other
/// module sends through the `http::Transport` it is given.
#[test]
fn only_the_transport_module_names_the_http_client() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut found = Vec::new();
    for file in &files {
        if file.ends_with("src/http.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a source file reads");
        for (n, line) in text.lines().enumerate() {
            if line.contains("reqwest") {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "HTTP clients outside src/http.rs (send through http::Transport):\n{}",
        found.join("\n")
    );
}

/// The dependency direction of docs/ARCHITECTURE.md: the provider format (with its
/// templates) imports nothing but the sensor tree and schema and the safe file reader,
/// and the sensor tree and schema import nothing of the crate but the two-halves helper
/// (the file reader only the page policy; both import nothing), so the format, the sensor schema and the tree form no circle
/// with the engine.
#[test]
fn the_provider_format_imports_no_runtime_module() {
    let graph = folder_graph();
    let allowed = |folder: &str| -> &'static [&'static str] {
        match folder {
            "provider" => &["sensors", "regular_file"],
            "sensors" => &["halves"],
            "regular_file" => &["pages"],
            _ => &[],
        }
    };
    let mut wrong = Vec::new();
    for folder in ["provider", "sensors", "regular_file", "halves", "pages"] {
        assert!(graph.contains_key(folder), "no module `{folder}` in src/");
        for dep in &graph[folder] {
            if !allowed(folder).contains(&dep.as_str()) {
                wrong.push(format!("{folder} uses crate::{dep}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// One route from answer to store (docs/ARCHITECTURE.md): callers answer with the
/// indexed document, and nothing maps, checks or stores a `serde_json::Value` route
/// beside it.
#[test]
fn one_route_from_answer_to_store() {
    let src = root().join("src");
    let engine = std::fs::read_to_string(src.join("engine/mod.rs")).expect("engine/mod.rs reads");
    assert!(
        engine.contains("async fn call(&self, request: &HttpRequest) -> Result<Doc, CallError>;"),
        "`Caller::call` answers with a `transform::Doc`"
    );
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let second_route = [
        "Answer::Value",
        "validate_tree",
        "fn call_answer",
        "fetch_sensors",
        "Map<String, Value>, FetchError>",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file reads");
        for pattern in second_route {
            if text.contains(pattern) {
                found.push(format!("{}: {pattern}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "a second route:\n{}", found.join("\n"));
}

/// Library errors are typed (`thiserror`); `anyhow` is the binary's (`src/main.rs`,
/// `src/cli/`), and `secret::Secret` is the one secret type (docs/ARCHITECTURE.md).
#[test]
fn anyhow_only_in_the_binary_and_one_secret_type() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() > 20, "the library's sources are found");
    let binary = [root().join("src/main.rs"), root().join("src/cli")];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if !binary.iter().any(|b| file.starts_with(b)) {
            assert!(!text.contains("anyhow"), "{} uses anyhow", file.display());
        }
        assert!(!text.contains("secrecy"), "{} uses secrecy", file.display());
    }
}

type Graph = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// The library's file modules (`src/a.rs` is `a`, `src/a/mod.rs` is `a`, `src/a/b.rs` is
/// `a::b`; the binary's `cli` and `main` are left out) and the file modules each one
/// names, through `crate::` (the longest path that is a file module) or `super::`. Test
/// modules (`#[cfg(test)] mod tests`) and comments are left out: only what the shipped
/// code depends on counts.
fn file_graph() -> Graph {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let name_of = |file: &Path| -> String {
        let rel = file.strip_prefix(&src).expect("a file below src");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| {
                c.as_os_str()
                    .to_str()
                    .expect("a UTF-8 file name")
                    .to_owned()
            })
            .collect();
        let last = parts.pop().expect("a file name");
        if last != "mod.rs" {
            parts.push(last.trim_end_matches(".rs").to_owned());
        }
        parts.join("::")
    };
    let modules: std::collections::BTreeSet<String> = files.iter().map(|f| name_of(f)).collect();
    let resolve = |path: &str| -> Option<String> {
        let segments: Vec<&str> = path.split("::").collect();
        (1..=segments.len())
            .rev()
            .map(|n| segments[..n].join("::"))
            .find(|candidate| modules.contains(candidate))
    };
    let mut graph = Graph::new();
    for file in &files {
        let module = name_of(file);
        if matches!(module.as_str(), "lib" | "main") || module.starts_with("cli") {
            continue;
        }
        let parent = match module.rsplit_once("::") {
            Some((parent, _)) if !file.ends_with("mod.rs") => parent.to_owned(),
            _ if file.ends_with("mod.rs") => module.clone(),
            _ => String::new(),
        };
        let text = std::fs::read_to_string(file).expect("a source file reads");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let entry = graph.entry(module.clone()).or_default();
        // Children declared here (`mod x;`) are named as `x::...` without a prefix.
        let children: Vec<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim().trim_start_matches("pub ");
                l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
            })
            .collect();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            for child in &children {
                let child_path = if module.is_empty() || file.ends_with("lib.rs") {
                    child.clone()
                } else {
                    format!("{module}::{child}")
                };
                let named = line.match_indices(&format!("{child}::")).any(|(i, _)| {
                    !line[..i].ends_with("::")
                        && !line[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                });
                if named && modules.contains(&child_path) {
                    entry.insert(child_path);
                }
            }
            for (prefix, base) in [("crate::", String::new()), ("super::", parent.clone())] {
                for (i, _) in line.match_indices(prefix) {
                    if prefix == "super::" && line[..i].ends_with("::") {
                        continue;
                    }
                    let rest = &line[i + prefix.len()..];
                    let head: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let head = head.trim_end_matches(':');
                    let mut paths = vec![head.to_owned()];
                    if let Some(group) = rest[head.len()..].strip_prefix("::{") {
                        for item in group.split('}').next().unwrap_or("").split(',') {
                            let item = item.trim();
                            if !item.is_empty() && item != "self" {
                                paths.push(format!("{head}::{item}"));
                            }
                        }
                    }
                    for path in paths {
                        let full = if base.is_empty() {
                            path
                        } else if path.is_empty() {
                            base.clone()
                        } else {
                            format!("{base}::{path}")
                        };
                        if let Some(target) = resolve(&full)
                            && target != module
                        {
                            entry.insert(target);
                        }
                    }
                }
            }
        }
    }
    graph
}

/// The file graph folded to top-level modules (`src/<name>.rs` or `src/<name>/`).
fn folder_graph() -> Graph {
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_owned();
    let mut graph = Graph::new();
    for (module, deps) in file_graph() {
        let entry = graph.entry(top(&module)).or_default();
        for dep in deps {
            if top(&dep) != top(&module) {
                entry.insert(top(&dep));
            }
        }
    }
    graph
}

fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = Default::default();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// No module depends on itself through others: data flows one way (docs/ARCHITECTURE.md,
/// "Dependency direction").
#[test]
fn modules_import_no_circle() {
    let files = file_graph();
    assert!(files.len() >= 30, "{:?}", files.keys());
    if let Some(circle) = circle(&files) {
        panic!("import circle between files: {}", circle.join(" -> "));
    }
    if let Some(circle) = circle(&folder_graph()) {
        panic!("import circle between folders: {}", circle.join(" -> "));
    }
}

/// The engine (parameters, requests, fetching, the answer document and the sensor tree)
/// runs against an injected caller: it imports neither the server, the store, the live
/// path nor the wiring (the command line is in the binary and out of reach anyway).
#[test]
fn the_engine_imports_neither_server_nor_store() {
    let graph = folder_graph();
    let engine = ["engine", "transform", "sensors", "provider", "igor"];
    let runtime = [
        "server", "app", "store", "live", "auth", "http", "settings", "config",
    ];
    let mut broken = Vec::new();
    for module in engine {
        assert!(graph.contains_key(module), "no module `{module}` in src/");
        for dep in &graph[module] {
            if runtime.contains(&dep.as_str()) {
                broken.push(format!("{module} imports {dep}"));
            }
        }
    }
    for (module, deps) in &graph {
        if module != "server" && module != "app" && deps.contains("server") {
            broken.push(format!("{module} imports server"));
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies against the layout:\n{}",
        broken.join("\n")
    );
}
