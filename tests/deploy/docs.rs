//! The README and docs/ stand on their own: they name no document outside this repository
//! (the design notes the project started from are not part of it), and every relative link
//! in them reaches a file or folder that is here.

use std::path::{Component, Path, PathBuf};

/// Words that point outside the repository.
const OUTSIDE: [&str; 2] = ["DESIGN.md", "../shared"];

/// `README.md` and every `.md` under `docs/`, as paths relative to `root`.
pub fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("README.md")];
    let mut folders = vec![PathBuf::from("docs")];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(root.join(&folder))
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
        for entry in entries {
            let path = folder.join(entry.unwrap().file_name());
            if root.join(&path).is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The target of every inline link or image (`[text](target)`, `![alt](target)`) and
/// every reference definition (`[name]: target`) outside fenced code blocks, with its line.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(end) = trimmed.find("]: ") {
                let target = trimmed[end + 3..].split_whitespace().next().unwrap_or("");
                targets.push((number, target.to_owned()));
            }
        }
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            targets.push((number, target.trim_matches(['<', '>']).to_owned()));
            rest = &rest[end..];
        }
    }
    targets
}

/// `path` with `.` and `..` resolved, or `None` when it climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(name) => out.push(name),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Every problem in `text`, the file at `file` (relative to the repository's root): a word
/// that points outside the repository, a relative link that leaves it, or one whose target
/// `exists` says is not there.
pub fn check(file: &Path, text: &str, exists: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        for word in OUTSIDE {
            if line.contains(word) {
                problems.push(format!(
                    "{}:{}: mentions {word}, which is not in this repository",
                    file.display(),
                    number + 1
                ));
            }
        }
    }
    let folder = file.parent().unwrap_or(Path::new(""));
    for (number, target) in link_targets(text) {
        let relative = !(target.is_empty()
            || target.starts_with('#')
            || target.contains("://")
            || target.starts_with("mailto:"));
        if !relative {
            continue;
        }
        let path = target.split(['#', '?']).next().unwrap_or("");
        let where_ = format!("{}:{number}: link to {target}", file.display());
        match normalize(&folder.join(path)) {
            None => problems.push(format!("{where_} leaves the repository")),
            Some(resolved) if !exists(&resolved) => {
                problems.push(format!("{where_}: {} does not exist", resolved.display()));
            }
            Some(_) => {}
        }
    }
    problems
}
