//! A child process the harness started (the operator, the twin): in its own process group,
//! so a CTRL-C in the terminal reaches only the harness, which then cleans up while the
//! child still runs; killed and reaped when dropped, so nothing outlives a failure.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};

#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `command` in a process group of its own.
    pub fn spawn(mut command: Command) -> io::Result<Self> {
        let child = command.process_group(0).spawn()?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it exited, when it has.
    pub fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Kills it (if it still runs) and reaps it.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
