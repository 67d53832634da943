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
/// snapshot results). They run it in a `Sandbox` or a temporary directory of their own.
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

/// The crate's modules a source file names (`crate::x`), outside its unit tests.
fn crate_modules(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("a source file reads");
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found: Vec<String> = code
        .match_indices("crate::")
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The dependency direction of docs/ARCHITECTURE.md: the provider format imports no
/// runtime module, and the compact sensor tree imports nothing of the crate, so the
/// format, the sensor schema and the tree form no circle with the engine.
#[test]
fn the_provider_format_imports_no_runtime_module() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src.join("provider"), &mut files);
    let mut wrong = Vec::new();
    let mut check = |file: &Path, allowed: &[&str]| {
        for module in crate_modules(file) {
            if !allowed.contains(&module.as_str()) {
                wrong.push(format!("{} uses crate::{module}", file.display()));
            }
        }
    };
    // Besides the format itself: its templates, the sensor schema (which outputs
    // exist), unit conversions and the safe file reader, none of which imports more.
    for file in &files {
        check(
            file,
            &["provider", "template", "schema", "units", "regular_file"],
        );
    }
    check(&src.join("template.rs"), &["provider"]);
    check(&src.join("units.rs"), &["provider"]);
    check(&src.join("regular_file.rs"), &[]);
    check(&src.join("schema.rs"), &["sensors"]);
    check(&src.join("sensors.rs"), &[]);
    assert!(files.len() >= 5, "{files:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// One route from answer to store (docs/ARCHITECTURE.md): callers answer with the
/// indexed document, and nothing maps, checks or stores a `serde_json::Value` route
/// beside it.
#[test]
fn one_route_from_answer_to_store() {
    let src = root().join("src");
    let engine = std::fs::read_to_string(src.join("engine.rs")).expect("engine.rs reads");
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

/// The library's top-level modules (`src/<name>.rs` or `src/<name>/`; the binary's `cli`
/// is not one) and the top-level modules each one names through `crate::`. Test modules
/// (`#[cfg(test)] mod tests`) and comments are left out: only what the shipped code
/// depends on counts.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for file in files {
        let rel = file.strip_prefix(&src).expect("a file below src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a UTF-8 file name");
        let module = first.trim_end_matches(".rs").to_owned();
        if matches!(module.as_str(), "lib" | "main" | "cli") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a source file reads");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let entry = graph.entry(module.clone()).or_default();
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                        .collect()
                } else {
                    vec![
                        rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or(""),
                    ]
                };
                for name in names {
                    if !name.is_empty() && name != module && name != "self" {
                        entry.insert(name.to_owned());
                    }
                }
            }
        }
    }
    graph
}

/// No module depends on itself through others: data flows one way (docs/ARCHITECTURE.md,
/// "Dependency direction").
#[test]
fn modules_import_no_circle() {
    let graph = module_graph();
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
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
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

/// The engine (parameters, requests, fetching, the answer document and the sensor tree)
/// runs against an injected caller: it imports neither the server, the store, the live
/// path nor the wiring (the command line is in the binary and out of reach anyway).
#[test]
fn the_engine_imports_neither_server_nor_store() {
    let graph = module_graph();
    let engine = [
        "engine",
        "params",
        "request",
        "transform",
        "sensors",
        "schema",
        "xml",
    ];
    let runtime = [
        "server", "app", "store", "live", "consent", "oauth", "lock", "http", "settings", "config",
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
