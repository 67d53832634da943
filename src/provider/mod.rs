//! Providers: loading, checking and the compiled form the engine runs.
//!
//! Loading is two-staged. [`raw`] types describe the file; [`compile`] turns them into
//! [`Provider`], with URLs, templates and JSONPaths parsed once, so nothing is parsed
//! per request. Every problem of a file is reported at once as `file:line:col: message`.

pub mod compile;
pub mod model;
pub mod raw;
pub mod selector;
mod strict;
pub mod template;
pub mod values;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use model::*;
pub use selector::Selector;

/// Loads and compiles one provider file.
pub fn load(path: &Path, overrides: &UrlOverrides) -> Result<Provider, Diagnostics> {
    let source = yaml::read_file(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_owned(),
            line: 1,
            col: 1,
            message: format!("the file {e}"),
        }])
    })?;
    compile::compile_source(path, &source, overrides)
}

/// Lists the provider files (`*.yaml`, `*.yml`) of a directory, sorted.
pub fn provider_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    Ok(files)
}
