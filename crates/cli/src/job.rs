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
//!
//! A process can leave the group (`setsid`, a daemon's double fork), so on Linux a job with a
//! lifetime is also *contained*: this process becomes a child subreaper before the command
//! starts, so whatever the command leaves behind is re-parented to it instead of to init, and
//! stays findable as one of its descendants (`/proc/PID/stat`). Then every process the command
//! started, in the group or not, is stopped: when the lifetime runs out (with the group: SIGTERM,
//! SIGKILL [`STOP_GRACE`] later), and when the command exits before that (the same, from its
//! exit). The descendants are listed again and again until none is left, each signalled only
//! while it is still one (see [`linux`]), and this process reaps them, so none is left a zombie.
//! Elsewhere (other Unix systems, or without a lifetime) a process that left the group is not
//! stopped.
//!
//! On Windows a job with a lifetime runs in a job object that kills every process in it when
//! its handle closes, and processes join the job of the process that starts them: when the
//! lifetime runs out, when the command exits, or when this process ends however it ends, the
//! handle is closed and the command with everything it started is gone at once (Windows has no
//! SIGTERM; there is no grace period). The command is assigned to the job right after it is
//! created, so a process it started in that first instant would not be in it.

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
    /// Windows, when contained: the job object holding the command and all it starts.
    #[cfg(windows)]
    job_object: Option<win32job::Job>,
}

impl Job {
    /// Starts `command` as a job: in a process group of its own on Unix, holding the terminal if
    /// this process did; `contained` (on Linux) also keeps every process it starts a
    /// descendant of this one, to be stopped with it (see the module's documentation).
    pub(crate) fn spawn(
        command: &mut tokio::process::Command,
        contained: bool,
    ) -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            let (group, child) = unix::Group::spawn(command, contained)?;
            Ok(Self { child, group })
        }
        #[cfg(windows)]
        {
            let mut child = command.spawn()?;
            let job_object = if contained {
                match windows::contain(&child) {
                    Ok(job_object) => Some(job_object),
                    Err(error) => {
                        // Never run a command with credentials uncontained.
                        let _ = child.start_kill();
                        return Err(error);
                    }
                }
            } else {
                None
            };
            Ok(Self { child, job_object })
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = contained;
            Ok(Self { child: command.spawn()? })
        }
    }

    /// Waits for the command; when `lifetime` (if any) runs out, calls `ran_out` and stops it
    /// (SIGTERM to its group, then SIGKILL after [`STOP_GRACE`]), and once it has exited makes
    /// sure nothing it started outlives the grace period. A contained job (Linux) stops every
    /// descendant with the group, and, when the command exits before its lifetime ran out,
    /// whatever it left behind (`left_behind` is called first, with how many processes).
    pub(crate) async fn wait(
        &mut self,
        lifetime: Option<Duration>,
        ran_out: impl FnOnce(),
        left_behind: impl FnOnce(usize),
        program: &str,
    ) -> anyhow::Result<ExitStatus> {
        let cannot = || format!("cannot wait for {program:?}");
        #[cfg(unix)]
        {
            let status = self.group.wait(&mut self.child, lifetime, ran_out, left_behind).await;
            self.group.take_back_terminal();
            status.with_context(cannot)
        }
        #[cfg(not(unix))]
        {
            #[cfg(not(windows))]
            let _ = left_behind;
            let Some(lifetime) = lifetime else {
                return self.child.wait().await.with_context(cannot);
            };
            if let Ok(status) = tokio::time::timeout(lifetime, self.child.wait()).await {
                #[cfg(windows)]
                if let Some(job_object) = self.job_object.take() {
                    windows::stop_left_behind(job_object, left_behind);
                }
                return status.with_context(cannot);
            }
            ran_out();
            // Closing the job object ends the command and everything it started.
            #[cfg(windows)]
            drop(self.job_object.take());
            // Already ended with its job object, or not contained.
            let _ = self.child.start_kill();
            self.child.wait().await.with_context(cannot)
        }
    }
}

#[cfg(windows)]
mod windows {
    use win32job::{ExtendedLimitInfo, Job as JobObject};

    /// A job object that ends every process in it when its handle closes, holding `child`.
    pub(super) fn contain(child: &tokio::process::Child) -> std::io::Result<JobObject> {
        let refused = |what: &str, error: win32job::JobError| {
            std::io::Error::other(format!("cannot {what} a Windows job object: {error}"))
        };
        let mut limits = ExtendedLimitInfo::new();
        limits.limit_kill_on_job_close();
        let job_object =
            JobObject::create_with_limit_info(&limits).map_err(|e| refused("create", e))?;
        let handle = child.raw_handle().ok_or_else(|| {
            std::io::Error::other("the command ended before it could be put in its job object")
        })?;
        let handle = isize::try_from(handle.addr())
            .map_err(|_| std::io::Error::other("a process handle out of range"))?;
        job_object.assign_process(handle).map_err(|e| refused("join the command to", e))?;
        Ok(job_object)
    }

    /// After the command exited: tells `left_behind` how many processes it left in its job
    /// object, then closes the job object, which ends them.
    pub(super) fn stop_left_behind(job_object: JobObject, left_behind: impl FnOnce(usize)) {
        let left = job_object.query_process_id_list().map(|ids| ids.len()).unwrap_or(0);
        if left > 0 {
            left_behind(left);
        }
        drop(job_object);
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

    /// How long processes that were killed may take to leave, before they are taken to be held
    /// in an uninterruptible kernel wait that no signal ends, and no longer waited for.
    #[cfg(target_os = "linux")]
    const DYING_WAIT: Duration = Duration::from_secs(5);
    /// How often a stopped command's group is checked for processes left behind.
    const POLL: Duration = Duration::from_millis(100);
    /// How often, once they are being killed, the command's descendants are listed again.
    #[cfg(target_os = "linux")]
    const KILL_POLL: Duration = Duration::from_millis(20);

    /// The command's process group, and the terminal while the group holds it.
    #[derive(Debug)]
    pub(super) struct Group {
        id: Pid,
        /// The terminal and the group to give it back to.
        terminal: Option<(OwnedFd, Pid)>,
        forwarded: Forwarded,
        stops: Stops,
        /// Every process the command started, in the group or not, when the job is contained.
        #[cfg(target_os = "linux")]
        descendants: Option<super::linux::Descendants>,
    }

    impl Group {
        pub(super) fn spawn(
            command: &mut tokio::process::Command,
            contained: bool,
        ) -> std::io::Result<(Self, tokio::process::Child)> {
            // Before the spawn: from then on nothing the command starts can be re-parented away.
            #[cfg(target_os = "linux")]
            let contain = if contained { Some(super::linux::Containment::start()?) } else { None };
            #[cfg(not(target_os = "linux"))]
            let _ = contained;
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
            let mut group = Self {
                id,
                terminal: None,
                forwarded,
                stops,
                #[cfg(target_os = "linux")]
                descendants: contain.map(|contain| contain.of(id)),
            };
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
            left_behind: impl FnOnce(usize),
        ) -> std::io::Result<ExitStatus> {
            let mut ran_out = Some(ran_out);
            let mut stop_at = lifetime.map(|lifetime| Instant::now() + lifetime);
            let mut kill_at: Option<Instant> = None;
            let mut killed = false;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status?,
                    signal = self.forwarded.recv() => self.signal(signal),
                    () = self.stops.next() => {
                        self.reap_orphans();
                        self.follow_a_stop();
                    }
                    () = sleep_until(stop_at) => {
                        stop_at = None;
                        if let Some(ran_out) = ran_out.take() {
                            ran_out();
                        }
                        self.stop(Signal::SIGTERM);
                        kill_at = Some(Instant::now() + STOP_GRACE);
                    }
                    () = sleep_until(kill_at) => {
                        kill_at = None;
                        killed = true;
                        self.stop(Signal::SIGKILL);
                    }
                }
            };
            #[cfg(target_os = "linux")]
            if self.descendants.is_some() {
                // The command is gone: the terminal goes back before anything it left behind is
                // waited for, so none of those can read it meanwhile.
                self.take_back_terminal();
                let kill_at = if killed { Some(Instant::now()) } else { kill_at };
                self.stop_descendants(kill_at, left_behind).await;
                return Ok(status);
            }
            let _ = (left_behind, killed);
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

        /// Stops the group and, in a contained job, every other descendant of this process.
        fn stop(&mut self, signal: Signal) {
            self.signal(signal);
            #[cfg(target_os = "linux")]
            if let Some(descendants) = &mut self.descendants {
                descendants.signal(signal);
            }
        }

        /// Reaps processes the command left behind that were re-parented here and have exited.
        fn reap_orphans(&self) {
            #[cfg(target_os = "linux")]
            if let Some(descendants) = &self.descendants {
                descendants.reap();
            }
        }

        /// Once the command has exited, in a contained job: stops every process it left behind
        /// and waits until none is left. SIGTERM first (`left_behind` is told how many there
        /// are) unless the lifetime already ran out, each process once, including ones started
        /// meanwhile; SIGKILL from `kill_at` (the end of the grace since the first SIGTERM), or
        /// from a signal to this process while it waits. Processes that stay dying for
        /// [`DYING_WAIT`] after SIGKILL (held in the kernel) are reported and not waited for.
        #[cfg(target_os = "linux")]
        async fn stop_descendants(
            &mut self,
            kill_at: Option<Instant>,
            left_behind: impl FnOnce(usize),
        ) {
            use std::io::Write as _;
            let Some(mut descendants) = self.descendants.take() else { return };
            let mut kill_at = match kill_at {
                Some(at) => at,
                None => {
                    let left = descendants.signal(Signal::SIGTERM);
                    if left == 0 {
                        return;
                    }
                    left_behind(left);
                    if descendants.group_running() {
                        self.signal(Signal::SIGTERM);
                    }
                    Instant::now() + STOP_GRACE
                }
            };
            // Since when every process left has been dying (killed, not yet gone).
            let mut dying_since: Option<Instant> = None;
            loop {
                let now = Instant::now();
                let killing = now >= kill_at;
                // Only while a member was listed running: an emptied group's id can be reused.
                if killing && descendants.group_running() {
                    self.signal(Signal::SIGKILL);
                }
                let signal = if killing { Signal::SIGKILL } else { Signal::SIGTERM };
                let left = descendants.signal(signal);
                if left == 0 {
                    return;
                }
                dying_since =
                    if descendants.all_dying() { dying_since.or(Some(now)) } else { None };
                if dying_since.is_some_and(|since| now.duration_since(since) >= DYING_WAIT) {
                    // Killed, they cannot run their code again; they leave when the kernel lets
                    // them, and init reaps them once this process is gone.
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "latchkey: {left} process(es) the command started are killed but held in \
                         an uninterruptible kernel wait; they cannot run again and exit when it ends"
                    );
                    return;
                }
                let pause = if killing { KILL_POLL } else { POLL };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = self.forwarded.recv() => kill_at = Instant::now(),
                }
            }
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

/// Containment on Linux: this process as the child subreaper of the command's processes, and
/// the tree of its descendants read from `/proc`.
///
/// Signalling a process by pid risks hitting another process that got the pid once the first
/// one was reaped. A child of this process cannot be reaped by anyone else, so its pid is safe
/// until this process waits for it; any other descendant is signalled only if `/proc` still shows
/// it, just before, with the parent and start time it was listed with. The command's group is
/// left to `killpg` (which cannot hit another group), and listed only to be waited for.
#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{HashMap, HashSet};
    use std::io::Write as _;

    use nix::errno::Errno;
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, waitpid};
    use nix::unistd::Pid;

    /// This process made a child subreaper, before the command starts.
    #[derive(Debug)]
    pub(super) struct Containment(());

    impl Containment {
        /// Makes this process a child subreaper; refuses when the processes the command would
        /// start could not be found again (`/proc` unreadable), rather than lose track of them.
        pub(super) fn start() -> std::io::Result<Self> {
            nix::sys::prctl::set_child_subreaper(true).map_err(|e| {
                std::io::Error::other(format!(
                    "cannot keep the processes the command starts within reach (PR_SET_CHILD_SUBREAPER: {e})"
                ))
            })?;
            if read(own_pid()).is_none() {
                return Err(std::io::Error::other(
                    "cannot read /proc, where the processes the command starts are found to stop them",
                ));
            }
            Ok(Self(()))
        }

        /// The descendants of this process, the command being `command`.
        pub(super) fn of(self, command: Pid) -> Descendants {
            Descendants {
                own: own_pid(),
                command: command.as_raw(),
                terminated: HashSet::new(),
                beyond_reach: HashSet::new(),
                group_running: true,
                all_dying: false,
            }
        }
    }

    /// Every process below this one, and what was done to them.
    #[derive(Debug)]
    pub(super) struct Descendants {
        own: i32,
        /// The command, its group's leader: its exit is the job's (tokio waits for it).
        command: i32,
        /// Processes sent SIGTERM already, by pid and start time: each gets it once.
        terminated: HashSet<(i32, u64)>,
        /// Processes this one may not signal (they changed user), by pid and start time.
        beyond_reach: HashSet<(i32, u64)>,
        /// Whether the last listing showed a process of the command's group running.
        group_running: bool,
        /// Whether every process the last SIGKILL round found running was dying (see [`dying`]).
        all_dying: bool,
    }

    impl Descendants {
        /// Sends `signal` to every descendant outside the command's group (SIGTERM at most once
        /// each), reaps the exited ones that are this process's children, and returns how many
        /// are still running, in the group or not, except ones it may not signal.
        pub(super) fn signal(&mut self, signal: Signal) -> usize {
            let mut running = 0;
            let mut dying_count = 0;
            self.group_running = false;
            for process in self.list() {
                if process.zombie {
                    self.reap_one(&process);
                    continue;
                }
                let key = (process.pid, process.start);
                if self.beyond_reach.contains(&key) {
                    continue;
                }
                let pid = Pid::from_raw(process.pid);
                let sent = if process.group == self.command {
                    // `killpg` signals the group; this only asks whether it may.
                    self.group_running = true;
                    kill(pid, None)
                } else if signal == Signal::SIGTERM && self.terminated.contains(&key) {
                    Ok(())
                } else {
                    // A child's pid stays its own until it is reaped here; any other process is
                    // signalled through a handle on that very process.
                    let sent = if process.parent == self.own {
                        kill(pid, signal)
                    } else {
                        process.signal_exactly(signal)
                    };
                    if signal == Signal::SIGTERM && sent.is_ok() {
                        self.terminated.insert(key);
                    }
                    sent
                };
                if sent == Err(Errno::EPERM) {
                    self.beyond_reach.insert(key);
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "latchkey: cannot stop process {} that the command started: it runs as another user",
                        process.pid
                    );
                    continue;
                }
                running += 1;
                if signal == Signal::SIGKILL && dying(process.pid) {
                    dying_count += 1;
                }
            }
            self.all_dying = signal == Signal::SIGKILL && dying_count == running;
            running
        }

        /// Whether every process the last [`Self::signal`] found running was sent SIGKILL and
        /// is dying: held in the kernel, if it stays so, where no signal reaches (see [`dying`]).
        pub(super) fn all_dying(&self) -> bool {
            self.all_dying
        }

        /// Whether the last [`Self::signal`] found a process of the command's group running
        /// (before the first, it may have).
        pub(super) fn group_running(&self) -> bool {
            self.group_running
        }

        /// Reaps every exited child of this process but the command.
        pub(super) fn reap(&self) {
            for process in self.list() {
                if process.zombie {
                    self.reap_one(&process);
                }
            }
        }

        fn reap_one(&self, process: &Process) {
            if process.parent == self.own && process.pid != self.command {
                let _ = waitpid(Pid::from_raw(process.pid), Some(WaitPidFlag::WNOHANG));
            }
        }

        /// Every process below this one, as `/proc` shows them now.
        fn list(&self) -> Vec<Process> {
            let mut children: HashMap<i32, Vec<Process>> = HashMap::new();
            let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                if let Some(process) = read(pid) {
                    children.entry(process.parent).or_default().push(process);
                }
            }
            let mut found = Vec::new();
            let mut next = vec![self.own];
            while let Some(parent) = next.pop() {
                for process in children.remove(&parent).unwrap_or_default() {
                    next.push(process.pid);
                    found.push(process);
                }
            }
            found
        }
    }

    /// One process, from `/proc/PID/stat`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Process {
        pub(super) pid: i32,
        pub(super) parent: i32,
        pub(super) group: i32,
        /// When it started (clock ticks since boot): with the pid, tells it from a later process
        /// that got the same pid.
        pub(super) start: u64,
        /// Exited, waiting to be reaped (see [`read`] for a leader whose threads run on).
        pub(super) zombie: bool,
    }

    impl Process {
        /// Sends `signal` to this process and no other: a pidfd is opened first (it names the
        /// process that has the pid at that moment, for as long as it is held), then `/proc` is
        /// read again to check that process is still this one (parent and start time), and the
        /// signal goes through the pidfd. A pid freed and reused at any point is never hit.
        /// A process gone or moved since the listing is left to the next listing. Without
        /// pidfds (Linux before 5.3) the check is made just before `kill` instead.
        fn signal_exactly(&self, signal: Signal) -> Result<(), Errno> {
            use rustix::process::{PidfdFlags, pidfd_open, pidfd_send_signal};
            let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
            let Some(pid) = rustix::process::Pid::from_raw(self.pid) else { return Ok(()) };
            let handle = match pidfd_open(pid, PidfdFlags::empty()) {
                Ok(handle) => Some(handle),
                Err(rustix::io::Errno::SRCH) => return Ok(()),
                Err(rustix::io::Errno::NOSYS) => None,
                Err(e) => return Err(errno(e)),
            };
            if !self.still_listed() {
                return Ok(());
            }
            let Some(handle) = handle else { return kill(Pid::from_raw(self.pid), signal) };
            let Some(signal) = rustix::process::Signal::from_named_raw(signal as i32) else {
                return Err(Errno::EINVAL);
            };
            match pidfd_send_signal(&handle, signal) {
                // Exited since the check: nothing to stop.
                Err(rustix::io::Errno::SRCH) => Ok(()),
                sent => sent.map_err(errno),
            }
        }

        /// Whether `/proc` still shows this process running, with the same parent and start.
        fn still_listed(&self) -> bool {
            read(self.pid).is_some_and(|now| {
                !now.zombie && now.parent == self.parent && now.start == self.start
            })
        }
    }

    fn own_pid() -> i32 {
        nix::unistd::getpid().as_raw()
    }

    fn read(pid: i32) -> Option<Process> {
        let mut process = parse(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        // The state is the thread group leader's: a leader that called `pthread_exit` shows as a
        // zombie while the process's other threads run on, holding everything it inherited.
        if process.zombie && threads_running(pid) {
            process.zombie = false;
        }
        Some(process)
    }

    /// Whether any thread of process `pid` but its leader is still running.
    fn threads_running(pid: i32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
        tasks.flatten().any(|task| {
            let Some(tid) = task.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                return false;
            };
            tid != pid
                && std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
                    .ok()
                    .and_then(|stat| parse(tid, &stat))
                    .is_some_and(|thread| !thread.zombie)
        })
    }

    /// Whether process `pid` is dying: SIGKILL is pending (it cannot run another instruction of
    /// its own) or it is already exiting. A process that stays dying is held in the kernel, in
    /// an uninterruptible wait (state `D`, a stuck network filesystem, a device), and leaves as
    /// soon as the wait ends; nothing more can be done to it from here.
    pub(super) fn dying(pid: i32) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        sigkill_pending(&status) || exiting(&stat)
    }

    /// Whether a `/proc/PID/status` text shows SIGKILL pending, for the thread or the process.
    pub(super) fn sigkill_pending(status: &str) -> bool {
        const SIGKILL_BIT: u64 = 1 << (Signal::SIGKILL as u64 - 1);
        status.lines().any(|line| {
            let pending = line.strip_prefix("SigPnd:").or_else(|| line.strip_prefix("ShdPnd:"));
            pending
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & SIGKILL_BIT != 0)
        })
    }

    /// Whether a `/proc/PID/stat` line has the kernel's `PF_EXITING` flag (field 9).
    pub(super) fn exiting(stat: &str) -> bool {
        const PF_EXITING: u64 = 0x4;
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(9 - 3))
            .and_then(|flags| flags.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_EXITING != 0)
    }

    /// `PID (COMMAND) STATE PPID PGRP ... STARTTIME ...` (proc(5)): the command name may hold
    /// spaces and parentheses, so the fields are counted from its last `)`.
    pub(super) fn parse(pid: i32, stat: &str) -> Option<Process> {
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Process {
            pid,
            zombie: matches!(*fields.first()?, "Z" | "X"),
            parent: fields.get(1)?.parse().ok()?,
            group: fields.get(2)?.parse().ok()?,
            // Field 22 of the line; the state is field 3.
            start: fields.get(22 - 3)?.parse().ok()?,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_stat_line_is_read_past_a_command_name_with_spaces_and_parentheses() {
            let line = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2 3\n";
            assert_eq!(
                parse(4242, line),
                Some(Process { pid: 4242, parent: 17, group: 4242, start: 987_654, zombie: false })
            );
            let zombie = "7 (sh) Z 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 55 0 0\n";
            assert!(parse(7, zombie).is_some_and(|p| p.zombie), "exited, not reaped");
            assert_eq!(parse(7, "7 (sh) S 1"), None, "cut short");
        }

        #[test]
        fn a_pending_sigkill_or_the_exiting_flag_marks_a_process_dying() {
            let status = |sig: &str, shd: &str| {
                format!("Name:\tsleep\nState:\tD (disk sleep)\nSigPnd:\t{sig}\nShdPnd:\t{shd}\n")
            };
            assert!(sigkill_pending(&status("0000000000000100", "0000000000000000")), "thread");
            assert!(sigkill_pending(&status("0000000000000000", "0000000000000100")), "process");
            assert!(
                !sigkill_pending(&status("0000000000004000", "00000000000000ff")),
                "SIGTERM (bit 15) and signals 1-8 pending are not a kill"
            );
            assert!(!sigkill_pending("Name:\tsleep\n"), "no pending masks listed");
            let stat = |flags: u64| format!("9 (a (b)) D 1 9 9 0 -1 {flags} 1 0 0 0\n");
            assert!(exiting(&stat(0x0040_0044)), "PF_EXITING among other flags");
            assert!(!exiting(&stat(0x0040_0040)), "other flags only");
            let own = own_pid();
            assert!(!dying(own), "this process is neither killed nor exiting");
        }

        #[test]
        fn a_leader_whose_threads_run_on_is_not_taken_for_a_zombie() {
            // The leader's own state is `Z` once it called `pthread_exit`; its threads still run.
            let script = "import ctypes, threading, time\n\
                          threading.Thread(target=lambda: time.sleep(60), daemon=True).start()\n\
                          ctypes.CDLL(None).pthread_exit(None)\n";
            let mut child = std::process::Command::new("python3")
                .args(["-c", script])
                .spawn()
                .expect("python3 runs");
            let pid = i32::try_from(child.id()).unwrap();
            let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !parse(pid, &stat()).unwrap().zombie {
                assert!(std::time::Instant::now() < deadline, "the leader never exited");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let listed = read(pid).expect("still in /proc");
            child.kill().unwrap();
            child.wait().unwrap();
            assert!(
                !listed.zombie,
                "the stat line says zombie, but a thread still runs with the process's \
                 environment: it must be stopped like any running process, not left to be reaped"
            );
        }

        #[test]
        fn a_signal_reaches_the_listed_process_and_never_one_that_took_its_pid_later() {
            let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("sleep");
            let pid = i32::try_from(child.id()).unwrap();
            let listed = read(pid).expect("the child in /proc");
            // A kill is delivered at once to a sleeping process; a third of a second without an
            // exit means none was sent.
            let mut survives = || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
                while std::time::Instant::now() < deadline {
                    if child.try_wait().unwrap().is_some() {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                true
            };
            // The same pid with another start time: what a listing taken before the pid was
            // freed and reused would hold. The pidfd names today's process, whose start differs.
            let stale = Process { start: listed.start + 1, ..listed.clone() };
            stale.signal_exactly(Signal::SIGKILL).expect("nothing to signal is not an error");
            assert!(survives(), "a stale listing must not kill the process that has its pid now");
            let moved = Process { parent: listed.parent + 1, ..listed.clone() };
            moved.signal_exactly(Signal::SIGKILL).unwrap();
            assert!(survives(), "nor a listing that names another parent");

            listed.signal_exactly(Signal::SIGKILL).expect("signalled through its pidfd");
            let status = child.wait().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(Signal::SIGKILL as i32),
                "the listed process itself is signalled"
            );
            // Reaped now: its pid names nobody (or somebody else), and that is not an error.
            listed.signal_exactly(Signal::SIGKILL).expect("a process gone is left alone");
        }

        #[test]
        fn this_process_is_listed_as_its_parent_sees_it() {
            let own = read(own_pid()).expect("this process in /proc");
            assert_eq!(own.parent, nix::unistd::getppid().as_raw());
            assert_eq!(own.group, nix::unistd::getpgrp().as_raw());
            assert!(!own.zombie && own.still_listed());
        }
    }
}
