//! The `latchkey-server` binary as an operator runs it: a child process with its own data
//! directory, its stderr collected line by line, signalled with `kill`.

use std::io::BufRead as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// A running `latchkey-server` process; killed when dropped.
pub struct BrokerProcess {
    child: std::process::Child,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl BrokerProcess {
    /// Starts the binary with its data in `data` and `args` (`--metrics-listen off` unless
    /// `args` names a metrics listener). The environment's broker settings are removed, so only
    /// `args` configure it.
    pub fn start(data: &Path, args: &[&str]) -> Self {
        Self::start_with_env(data, args, &[])
    }

    /// [`BrokerProcess::start`] with `env` added to the process's environment.
    pub fn start_with_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey-server"));
        command.args(args);
        if !args.contains(&"--metrics-listen") {
            command.args(["--metrics-listen", "off"]);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data)
            .env_remove("LATCHKEY_CONFIG")
            .env_remove("LATCHKEY_WORKSPACE_CREATION")
            .env_remove("LATCHKEY_CREATION_TOKEN_FILE")
            .env("LATCHKEY_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("latchkey-server starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr is piped");
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, log, reader: Some(reader) }
    }

    /// Everything logged so far, one line per line.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The first line holding `needle`, within 20 seconds.
    pub fn wait_for(&self, needle: &str) -> String {
        for _ in 0..400 {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {needle:?} in the log: {}", self.log_text());
    }

    /// The API listener's address, from the startup line of a broker logging JSON.
    pub fn listening(&self) -> String {
        let ready: Value = serde_json::from_str(&self.wait_for("latchkey-server ready")).unwrap();
        ready["fields"]["listen"].as_str().unwrap().to_owned()
    }

    /// Sends SIGHUP and waits (10 seconds at most) until the lines logged afterwards hold each
    /// of `needles`; returns those lines.
    pub fn hang_up_and_await(&self, needles: &[&str]) -> String {
        let before = self.log.lock().unwrap().len();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -HUP reached the broker");
        for _ in 0..400 {
            let after = self.log.lock().unwrap()[before..].join("\n");
            if needles.iter().all(|needle| after.contains(needle)) {
                return after;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("not all of {needles:?} in the log after SIGHUP: {}", self.log_text());
    }

    /// Sends SIGTERM and waits (10 seconds at most) for the broker to exit; whether it did.
    pub fn terminate_and_wait(&mut self) -> bool {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM reached the broker");
        for _ in 0..400 {
            if self.child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Stops the broker and returns everything it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log_text()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
