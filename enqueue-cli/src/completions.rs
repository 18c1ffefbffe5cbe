//! `portal-sync completions bash|zsh|fish`: shell completion scripts, generated
//! from the same clap definition the binary parses.

use clap::CommandFactory;

use crate::cli::{Cli, Shell};

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn std::io::Write) {
    let mut command = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, "portal-sync", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            let script = String::from_utf8(out).expect("utf-8");
            for sub in ["enqueue", "status", "import", "dead", "check"] {
                assert!(script.contains(sub), "{shell:?} script lacks {sub}");
            }
        }
    }
}
