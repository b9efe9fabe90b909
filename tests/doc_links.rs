//! The documentation stands alone: every relative link in README.md, ARCHITECTURE.md
//! and docs/*.md names a file inside the repository, and every `#anchor` a heading of
//! its target.

use std::path::{Path, PathBuf};

/// The Markdown files checked: the README, ARCHITECTURE.md and everything under docs/.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/ exists") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The targets of inline links and images, `[text](target)`, outside code blocks and
/// code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        // Indented code blocks (four spaces) hold commands and outputs, not links.
        if fenced || line.starts_with("    ") {
            continue;
        }
        let mut in_code = false;
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '`' => in_code = !in_code,
                ']' if !in_code && chars.get(i + 1) == Some(&'(') => {
                    let rest: String = chars[i + 2..].iter().collect();
                    if let Some(end) = rest.find(')') {
                        targets.push(rest[..end].to_string());
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_`
/// dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug(" Exactness on quadratics: `hasme moments`"),
        "exactness-on-quadratics-hasme-moments"
    );
    assert_eq!(slug("weak-order"), "weak-order");
}

#[test]
fn every_link_resolves_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .expect("the crate root");
    let mut checked = 0;
    let mut broken = Vec::new();
    for doc in documents(&root) {
        let text = std::fs::read_to_string(&doc).expect("readable");
        let name = doc.strip_prefix(&root).unwrap().display().to_string();
        for target in link_targets(&text) {
            checked += 1;
            if target.starts_with("https://") || target.starts_with("http://") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(file)
            };
            let Ok(path) = path.canonicalize() else {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            };
            if !path.starts_with(&root) {
                broken.push(format!("{name}: {target}: outside the repository"));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    broken.push(format!("{name}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
