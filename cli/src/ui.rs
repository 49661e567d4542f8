//! Terminal output in one place: progress lines (indicatif, on a TTY only), prompts
//! (dialoguer, never without a TTY), plain lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Progress lines on stderr; invisible when stderr is not a terminal.
pub struct Progress {
    multi: MultiProgress,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
        }
    }

    pub fn line(&self, prefix: String) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} [{elapsed}]")
                .expect("a valid template"),
        );
        bar.set_prefix(prefix);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A byte-count bar (uploads).
    pub fn bytes(&self, prefix: String, total: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix);
        bar
    }

    /// Prints a line above the progress lines (or plainly when they are hidden).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.multi.is_hidden() {
            println!("{}", line.as_ref());
        } else {
            let _ = self.multi.println(line.as_ref());
        }
    }
}

/// Asks for a secret twice without echo. Only call when [`interactive`].
pub fn password(prompt: &str) -> anyhow::Result<secrecy::SecretString> {
    let p = dialoguer::Password::new()
        .with_prompt(prompt)
        .with_confirmation("Repeat it", "the two entries differ")
        .interact()?;
    Ok(secrecy::SecretString::from(p))
}

/// A typed confirmation: the operator types `expected` (the target region). `yes` skips it;
/// without a terminal and without `yes` this refuses, since nobody could confirm.
pub fn confirm_typed(expected: &str, yes: bool, what: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !interactive() {
        anyhow::bail!(
            "refusing to act without confirmation: no terminal to ask on; re-run with --yes \
             (or --plan to see what would change)"
        );
    }
    eprintln!("{what}");
    let typed: String = dialoguer::Input::new()
        .with_prompt(format!("Type {expected:?} to go ahead"))
        .interact_text()?;
    if typed.trim() != expected {
        anyhow::bail!("not confirmed (typed {typed:?}, expected {expected:?}); nothing changed");
    }
    Ok(())
}
