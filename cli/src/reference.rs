//! What is generated from the clap definitions: `--version` (with the commit), shell
//! completions, man pages and the Markdown CLI reference in `docs/cli.md`.

use std::path::Path;
use std::sync::LazyLock;

use anyhow::Context as _;
use clap::CommandFactory;

/// `0.1.0 (36e8cf6 2026-11-26)`: the crate's version, the commit it was built from and that
/// commit's date ("-dirty" when the checkout had changes).
pub(crate) static VERSION: LazyLock<String> = LazyLock::new(|| {
    let sha = env!("VERGEN_GIT_SHA");
    let dirty = if env!("VERGEN_GIT_DIRTY") == "true" {
        "-dirty"
    } else {
        ""
    };
    format!(
        "{} ({sha}{dirty} {})",
        env!("CARGO_PKG_VERSION"),
        env!("VERGEN_GIT_COMMIT_DATE")
    )
});

pub(crate) fn completions<C: CommandFactory>(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut command = C::command();
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    print(&script)
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn print(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// slipway.1 on stdout, or every command's page written into `dir`.
pub(crate) fn man<C: CommandFactory>(dir: Option<&Path>) -> anyhow::Result<()> {
    let command = C::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
            eprintln!("man pages written to {}", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            print(&page)?;
        }
    }
    Ok(())
}

/// The CLI reference in Markdown, every command and option, as `docs/cli.md` carries it below
/// its marker.
/// The page's own heading and introduction come before the marker, so clap-markdown's title
/// and opening sentence are left out.
pub(crate) fn markdown<C: CommandFactory>() -> String {
    let text = clap_markdown::help_markdown_custom::<C>(
        &clap_markdown::MarkdownOptions::new()
            .show_footer(false)
            .show_table_of_contents(true)
            .title("slipway".to_owned()),
    );
    let start = text.find("**Command Overview:**").unwrap_or(0);
    format!("\n{}", &text[start..])
}
