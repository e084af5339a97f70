//! The documentation holds: the example configuration loads, every key it uses is in the
//! configuration reference, every relative link in the README and `docs/` leads somewhere,
//! and the README stays short.
//!
//! The reference's convention: a key is documented when its full path, its sections joined
//! by dots (`pipelines.environments.deploy.command`), is written in backticks in the first
//! cell of a table row of `docs/configuration.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use slipway::adapters::local::secrets_file::SecretsFile;
use slipway::config::Config;

/// Tables whose keys are names the user chooses (variables, headers, JSON pointers), not
/// configuration keys: the table itself is documented, its keys are not.
const FREE_FORM: &[&str] = &[
    "pipelines.environments.deploy.env",
    "pipelines.environments.deploy.secrets",
    "pipelines.environments.deploy.secret_files",
    "pipelines.environments.smoke.headers",
    "pipelines.environments.smoke.json",
    "pipelines.environments.bake.source.headers",
];

/// The README is the front page: past this, move text into `docs/`.
const README_LIMIT: usize = 12 * 1024;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn the_example_configuration_loads_and_its_secrets_example_has_every_parameter() {
    let root = root();
    let config = Config::load(&root.join("slipway.example.toml")).unwrap_or_else(|e| panic!("{e}"));
    let secrets = SecretsFile::from_toml(
        &read(&root.join("slipway.secrets.example.toml")),
        "slipway.secrets.example.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let held: BTreeSet<_> = secrets.names().collect();
    let missing: Vec<_> = slipway::embedded::required_secrets(&config)
        .into_iter()
        .filter(|p| !held.contains(p))
        .map(|p| p.as_str().to_owned())
        .collect();
    assert!(
        missing.is_empty(),
        "slipway.secrets.example.toml lacks parameters slipway.example.toml names: {missing:?}"
    );
}

/// Every key path of a TOML table: arrays of tables add no index (`pipelines.name`).
fn key_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        walk(value, &path, out);
        out.insert(path);
    }
}

fn walk(value: &toml::Value, path: &str, out: &mut BTreeSet<String>) {
    if FREE_FORM.contains(&path) {
        return;
    }
    match value {
        toml::Value::Table(table) => key_paths(table, path, out),
        toml::Value::Array(items) => {
            for item in items {
                if let toml::Value::Table(table) = item {
                    key_paths(table, path, out);
                }
            }
        }
        _ => {}
    }
}

/// The keys the reference documents: backticked words in the first cell of table rows.
fn documented_keys(reference: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in reference.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or_default();
        keys.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    keys
}

#[test]
fn every_key_of_the_example_configuration_is_in_the_reference() {
    let root = root();
    let example: toml::Table = toml::from_str(&read(&root.join("slipway.example.toml"))).unwrap();
    let mut used = BTreeSet::new();
    key_paths(&example, "", &mut used);
    assert!(used.contains("pipelines.environments.deploy.command"), "{used:?}");
    let documented = documented_keys(&read(&root.join("docs/configuration.md")));
    let missing: Vec<_> = used.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md has no table row for these keys of slipway.example.toml \
         (write the full path in backticks in a row's first cell): {missing:?}"
    );
}

/// The README and every page under `docs/`.
fn pages(root: &Path) -> Vec<PathBuf> {
    fn under(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                under(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out = vec![root.join("README.md")];
    under(&root.join("docs"), &mut out);
    out.sort();
    out
}

/// The lines of a page outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to dashes.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a page offers: its headings' (a repeated one gets `-1`, `-2`, …) and its
/// `<a id="…">` tags.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    for line in prose(text) {
        let level = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            let base = slug(&line[level..]);
            let mut anchor = base.clone();
            let mut n = 0;
            while anchors.contains(&anchor) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
            anchors.insert(anchor);
        }
        let mut rest = line;
        while let Some(at) = rest.find("<a id=\"") {
            rest = &rest[at + 7..];
            if let Some(end) = rest.find('"') {
                anchors.insert(rest[..end].to_owned());
            }
        }
    }
    anchors
}

/// The targets of a page's Markdown links, `[text](target)`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            targets.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn every_relative_link_in_the_readme_and_docs_leads_somewhere() {
    let root = root();
    let mut broken = Vec::new();
    for page in pages(&root) {
        let text = read(&page);
        let dir = page.parent().unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() { page.clone() } else { dir.join(path) };
            let name = page.strip_prefix(&root).unwrap().display().to_string();
            if !file.exists() {
                broken.push(format!("{name}: {target} (no such file)"));
            } else if !anchor.is_empty()
                && file.extension().is_some_and(|e| e == "md")
                && !anchors(&read(&file)).contains(anchor)
            {
                broken.push(format!("{name}: {target} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_stays_short() {
    let size = read(&root().join("README.md")).len();
    assert!(
        size < README_LIMIT,
        "README.md is {size} bytes, over {README_LIMIT}: move detail into docs/"
    );
}

#[test]
fn the_checks_catch_what_they_are_for() {
    // Anchors as GitHub makes them, including punctuation, code and repeats.
    let page = "# On AWS: Lambda, SQS, S3 and SSM\n## `GET /rollback/{token}`\n## Runs\n## Runs\n\
                ```sh\n# not a heading\n```\n<a id=\"the-read-model\"></a>";
    let found = anchors(page);
    for anchor in [
        "on-aws-lambda-sqs-s3-and-ssm",
        "get-rollbacktoken",
        "runs",
        "runs-1",
        "the-read-model",
    ] {
        assert!(found.contains(anchor), "{anchor} not in {found:?}");
    }
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        link_targets("see [a](b.md#c) and ![d](e.png)\n```\n[x](y)\n```"),
        ["b.md#c", "e.png"]
    );
    // Keys: arrays of tables add no index; free-form tables are not walked into.
    let example: toml::Table = toml::from_str(
        "[[pipelines]]\nname = \"a\"\n[[pipelines.environments]]\n[pipelines.environments.deploy]\n\
         env = { X = \"1\" }\n",
    )
    .unwrap();
    let mut used = BTreeSet::new();
    key_paths(&example, "", &mut used);
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        [
            "pipelines",
            "pipelines.environments",
            "pipelines.environments.deploy",
            "pipelines.environments.deploy.env",
            "pipelines.name",
        ]
    );
    assert_eq!(
        documented_keys("| `a.b` | `not.this` |\n| `c`, `d` | x |\ntext `e`"),
        BTreeSet::from(["a.b".to_owned(), "c".to_owned(), "d".to_owned()])
    );
}
