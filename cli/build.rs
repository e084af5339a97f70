//! Stamps the commit into `slipway --version` (VERGEN_GIT_SHA, VERGEN_GIT_DIRTY). Built outside
//! a git checkout, vergen falls back to "VERGEN_IDEMPOTENT_OUTPUT" with a cargo warning.

use vergen_gitcl::{Emitter, GitclBuilder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let git = GitclBuilder::default()
        .sha(true)
        .dirty(false)
        .commit_date(true)
        .build()?;
    Emitter::default().add_instructions(&git)?.emit()?;
    Ok(())
}
