//! The command `latchkey run` starts, as a job of its own, the way a shell runs one.
//!
//! On Unix the command is the leader of a new process group, so everything it starts (a shell's
//! children, a tool's workers) is in the group too, and stopping the group stops them all: when
//! the lifetime of injected credentials runs out, the group gets SIGTERM, then SIGKILL
//! [`STOP_GRACE`] later, and the processes a command left behind are stopped with it.
//!
//! A new group would no longer get the terminal's signals or be allowed to read it, so:
//! - when this process is the terminal's foreground job, the terminal is handed to the group for
//!   as long as the command runs (Ctrl-C, Ctrl-\ and reads reach the command, as they would
//!   without Latchkey) and taken back when it exits;
//! - SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to this process are passed on to the group;
//! - on Linux, when the command is stopped (Ctrl-Z), this process takes the terminal back and
//!   stops its own group, so the shell sees its job stopped; continued (`fg`, `bg`), it
//!   continues the command, handing it the terminal again if it is in the foreground. Elsewhere
//!   a stopped command keeps the terminal until it is continued from another terminal.
//!
//! The command's own exit status is reported either way (128 + N when signal N ended it).
//! Elsewhere only the command itself is stopped.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;

/// How long a command whose lifetime ran out has between SIGTERM and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running command.
#[derive(Debug)]
pub(crate) struct Job {
    child: tokio::process::Child,
    #[cfg(unix)]
    group: unix::Group,
}

impl Job {
    /// Starts `command` as a job: in a process group of its own on Unix, holding the terminal if
    /// this process did.
    pub(crate) fn spawn(command: &mut tokio::process::Command) -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            let (group, child) = unix::Group::spawn(command)?;
            Ok(Self { child, group })
        }
        #[cfg(not(unix))]
        {
            Ok(Self { child: command.spawn()? })
        }
    }

    /// Waits for the command; when `lifetime` (if any) runs out, calls `ran_out` and stops it
    /// (SIGTERM to its group, then SIGKILL after [`STOP_GRACE`]), and once it has exited makes
    /// sure nothing it started outlives the grace period.
    pub(crate) async fn wait(
        &mut self,
        lifetime: Option<Duration>,
        ran_out: impl FnOnce(),
        program: &str,
    ) -> anyhow::Result<ExitStatus> {
        let cannot = || format!("cannot wait for {program:?}");
        #[cfg(unix)]
        {
            let status = self.group.wait(&mut self.child, lifetime, ran_out).await;
            self.group.take_back_terminal();
            status.with_context(cannot)
        }
        #[cfg(not(unix))]
        {
            let Some(lifetime) = lifetime else {
                return self.child.wait().await.with_context(cannot);
            };
            if let Ok(status) = tokio::time::timeout(lifetime, self.child.wait()).await {
                return status.with_context(cannot);
            }
            ran_out();
            self.child.start_kill().with_context(cannot)?;
            self.child.wait().await.with_context(cannot)
        }
    }
}

#[cfg(unix)]
mod unix {
    use std::os::fd::{AsFd as _, OwnedFd};
    use std::process::ExitStatus;
    use std::time::Duration;

    use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, pthread_sigmask};
    use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};
    use tokio::signal::unix::SignalKind;
    use tokio::time::Instant;

    use super::STOP_GRACE;

    /// How often a stopped command's group is checked for processes left behind.
    const POLL: Duration = Duration::from_millis(100);

    /// The command's process group, and the terminal while the group holds it.
    #[derive(Debug)]
    pub(super) struct Group {
        id: Pid,
        /// The terminal and the group to give it back to.
        terminal: Option<(OwnedFd, Pid)>,
        forwarded: Forwarded,
        stops: Stops,
    }

    impl Group {
        pub(super) fn spawn(
            command: &mut tokio::process::Command,
        ) -> std::io::Result<(Self, tokio::process::Child)> {
            let terminal = foreground_terminal();
            // Listening before the spawn: a signal from then on reaches the command.
            let forwarded = Forwarded::new()?;
            let stops = Stops::new()?;
            command.process_group(0);
            let child = command.spawn()?;
            // INVARIANT: a spawned child that has not been waited for has an id, and
            // `process_group(0)` made it the leader of a group with that id.
            let id = child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw)
                .ok_or_else(|| std::io::Error::other("the command has no process id"))?;
            let mut group = Self { id, terminal: None, forwarded, stops };
            if let Some((fd, own)) = terminal
                && tcsetpgrp(fd.as_fd(), id).is_ok()
            {
                group.terminal = Some((fd, own));
                // A read of the terminal before it was handed over stopped the command: resume.
                let _ = killpg(id, Signal::SIGCONT);
            }
            Ok((group, child))
        }

        /// Waits for the group's leader, passing on the signals this process gets and stopping
        /// the group when `lifetime` runs out.
        pub(super) async fn wait(
            &mut self,
            child: &mut tokio::process::Child,
            lifetime: Option<Duration>,
            ran_out: impl FnOnce(),
        ) -> std::io::Result<ExitStatus> {
            let mut ran_out = Some(ran_out);
            let mut stop_at = lifetime.map(|lifetime| Instant::now() + lifetime);
            let mut kill_at: Option<Instant> = None;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status?,
                    signal = self.forwarded.recv() => self.signal(signal),
                    () = self.stops.next() => self.follow_a_stop(),
                    () = sleep_until(stop_at) => {
                        stop_at = None;
                        if let Some(ran_out) = ran_out.take() {
                            ran_out();
                        }
                        self.signal(Signal::SIGTERM);
                        kill_at = Some(Instant::now() + STOP_GRACE);
                    }
                    () = sleep_until(kill_at) => {
                        kill_at = None;
                        self.signal(Signal::SIGKILL);
                    }
                }
            };
            // The command was told to stop: what it started gets the same grace, then SIGKILL.
            if let Some(kill_at) = kill_at {
                while self.alive() && Instant::now() < kill_at {
                    tokio::time::sleep(POLL).await;
                }
                if self.alive() {
                    self.signal(Signal::SIGKILL);
                }
            }
            Ok(status)
        }

        /// Gives the terminal back to the group this process is in, if the command has it.
        pub(super) fn take_back_terminal(&mut self) {
            let Some((fd, own)) = self.terminal.take() else { return };
            if tcgetpgrp(fd.as_fd()).is_ok_and(|group| group == self.id) {
                foreground_from_background(&fd, own);
            }
        }

        /// If the command was stopped (Ctrl-Z, SIGTSTP), stops this process's own group too,
        /// the job the shell started, with the terminal given back; once continued, continues the
        /// command, with the terminal if this job has it. Where nothing could continue this
        /// process (an orphaned group), the kernel discards the stop and the command is simply
        /// continued.
        #[cfg(target_os = "linux")]
        fn follow_a_stop(&self) {
            use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
            // WSTOPPED without WEXITED: an exit is left for the child's own wait.
            let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG;
            if !matches!(waitid(Id::Pid(self.id), flags), Ok(WaitStatus::Stopped(..))) {
                return;
            }
            let terminal = self
                .terminal
                .as_ref()
                .filter(|(fd, _)| tcgetpgrp(fd.as_fd()).is_ok_and(|group| group == self.id));
            if let Some((fd, own)) = terminal {
                foreground_from_background(fd, *own);
            }
            let _ = killpg(getpgrp(), Signal::SIGTSTP);
            // Continued (or the stop was discarded).
            if let Some((fd, own)) = terminal
                && tcgetpgrp(fd.as_fd()).is_ok_and(|group| group == *own)
            {
                let _ = tcsetpgrp(fd.as_fd(), self.id);
            }
            self.signal(Signal::SIGCONT);
        }

        #[cfg(not(target_os = "linux"))]
        fn follow_a_stop(&self) {}

        fn signal(&self, signal: Signal) {
            // Fails only once every process of the group has exited.
            let _ = killpg(self.id, signal);
        }

        fn alive(&self) -> bool {
            killpg(self.id, None).is_ok()
        }
    }

    /// Makes `group` the terminal's foreground group from a process that is not in the
    /// foreground: that raises SIGTTOU, which would stop this process; blocked, the kernel lets
    /// the call through instead. Only this thread's mask changes, and only for this call.
    fn foreground_from_background(fd: &OwnedFd, group: Pid) {
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let mut before = SigSet::empty();
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut before)).is_ok() {
            let _ = tcsetpgrp(fd.as_fd(), group);
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
        }
    }

    /// Stops of the command, as SIGCHLD announces them (Linux; elsewhere never).
    struct Stops {
        #[cfg(target_os = "linux")]
        children: tokio::signal::unix::Signal,
    }

    impl Stops {
        fn new() -> std::io::Result<Self> {
            Ok(Self {
                #[cfg(target_os = "linux")]
                children: tokio::signal::unix::signal(SignalKind::child())?,
            })
        }

        /// The next SIGCHLD: a child stopped, continued or exited.
        async fn next(&mut self) {
            #[cfg(target_os = "linux")]
            if self.children.recv().await.is_some() {
                return;
            }
            std::future::pending::<()>().await;
        }
    }

    impl std::fmt::Debug for Stops {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Stops").finish_non_exhaustive()
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            self.take_back_terminal();
        }
    }

    /// The terminal this process is the foreground job of (from stdin, stdout or stderr), and
    /// its process group.
    fn foreground_terminal() -> Option<(OwnedFd, Pid)> {
        let own = getpgrp();
        let candidates = [
            std::io::stdin().as_fd().try_clone_to_owned(),
            std::io::stdout().as_fd().try_clone_to_owned(),
            std::io::stderr().as_fd().try_clone_to_owned(),
        ];
        candidates
            .into_iter()
            .flatten()
            .find(|fd| tcgetpgrp(fd.as_fd()).is_ok_and(|group| group == own))
            .map(|fd| (fd, own))
    }

    /// The signals passed on to the command's group.
    struct Forwarded {
        streams: Vec<(tokio::signal::unix::Signal, Signal)>,
    }

    impl Forwarded {
        fn new() -> std::io::Result<Self> {
            let mut streams = Vec::new();
            for (kind, signal) in [
                (SignalKind::interrupt(), Signal::SIGINT),
                (SignalKind::terminate(), Signal::SIGTERM),
                (SignalKind::hangup(), Signal::SIGHUP),
                (SignalKind::quit(), Signal::SIGQUIT),
            ] {
                streams.push((tokio::signal::unix::signal(kind)?, signal));
            }
            Ok(Self { streams })
        }

        /// The next signal this process gets.
        async fn recv(&mut self) -> Signal {
            std::future::poll_fn(|context| {
                for (stream, signal) in &mut self.streams {
                    if let std::task::Poll::Ready(Some(())) = stream.poll_recv(context) {
                        return std::task::Poll::Ready(*signal);
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
    }

    /// Waits until `at`, or forever when there is none.
    async fn sleep_until(at: Option<Instant>) {
        match at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    impl std::fmt::Debug for Forwarded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Forwarded").field("signals", &self.streams.len()).finish()
        }
    }
}
