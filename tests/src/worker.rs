//! The real `granary-worker` binary as a child process, so SIGKILL and restart are real.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

/// Path to a freshly built `granary-worker` (built once per test binary with the same profile).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "-p",
                "granary-worker",
                "--bin",
                "granary-worker",
            ])
            .status()
            .expect("run cargo build for granary-worker");
        assert!(status.success(), "building granary-worker failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("granary-worker")
    })
    .clone()
}

/// A running worker process.
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// Starts `granary-worker run` with `env` (on top of nothing from the parent but PATH).
    pub fn start(env: &[(String, String)]) -> Self {
        let mut cmd = Command::new(binary());
        cmd.arg("run")
            .current_dir(std::env::temp_dir())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn granary-worker");
        Self { child }
    }

    /// SIGKILL: no cleanup of any kind runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit; returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
