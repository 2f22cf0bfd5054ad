//! Opening the authorization URL for the person signing in.

use url::Url;

use super::OAuthError;

/// Opens the authorization URL where the person can sign in. The desktop app and the CLI use
/// [`SystemBrowser`]; tests sign in over HTTP instead.
pub trait BrowserLauncher: Send + Sync {
    /// Hands `url` to a browser and returns without waiting for the sign-in.
    fn open(&self, url: &Url) -> Result<(), OAuthError>;
}

/// The system browser, through the platform's URL opener, run directly (no shell: the URL is
/// one argument, never parsed as a command line).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemBrowser;

impl BrowserLauncher for SystemBrowser {
    fn open(&self, url: &Url) -> Result<(), OAuthError> {
        // Windows: `start` is a cmd.exe built-in (it would need a shell), so the URL goes to
        // the same handler through rundll32. The URL always starts with `http`, so no opener
        // can take it for an option.
        let (program, args): (&str, &[&str]) = if cfg!(target_os = "macos") {
            ("open", &[url.as_str()])
        } else if cfg!(windows) {
            ("rundll32", &["url.dll,FileProtocolHandler", url.as_str()])
        } else {
            ("xdg-open", &[url.as_str()])
        };
        std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| OAuthError::Browser(format!("{program}: {}", e.kind())))
    }
}

/// A browser chosen by the person: `program` is run with the URL as its one argument (no
/// shell). The desktop app and the CLI use it when `LATCHKEY_BROWSER` names a program, as
/// `$BROWSER` works for other tools; tests use it to sign in with a scripted browser.
#[derive(Debug, Clone)]
pub struct CommandBrowser {
    program: std::path::PathBuf,
}

impl CommandBrowser {
    /// A launcher running `program`.
    pub fn new(program: impl Into<std::path::PathBuf>) -> Self {
        Self { program: program.into() }
    }

    /// The program named by `LATCHKEY_BROWSER`, if set and not empty.
    pub fn from_env() -> Option<Self> {
        std::env::var_os("LATCHKEY_BROWSER").filter(|p| !p.is_empty()).map(Self::new)
    }
}

impl BrowserLauncher for CommandBrowser {
    fn open(&self, url: &Url) -> Result<(), OAuthError> {
        std::process::Command::new(&self.program)
            .arg(url.as_str())
            .stdin(std::process::Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| OAuthError::Browser(format!("{}: {}", self.program.display(), e.kind())))
    }
}
