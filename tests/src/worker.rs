//! The real `granary-worker` (and `granary-api`) binaries as child processes, so SIGKILL,
//! restart and peak memory are real.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

/// Path to a freshly built `granary-worker` (built once per test binary). It is built with
/// `--workspace`, the same feature resolution as `cargo test --workspace`, so the shared
/// dependencies are not rebuilt with other features (measured: a `-p granary-worker` build
/// from inside the tests recompiled for 90 s every time).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binaries().join("granary-worker"))
        .clone()
}

/// Builds every binary of the workspace (debug) and returns their folder. With
/// `GRANARY_PREBUILT_BINARIES=1` (set by `scripts/test`, which builds them once before the
/// suite) it only checks that they are there: under nextest every test is a process of its own,
/// and each would otherwise queue on cargo's build lock.
pub fn build_binaries() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("debug");
    if std::env::var_os("GRANARY_PREBUILT_BINARIES").is_some_and(|v| v == "1") {
        for bin in ["granary-api", "granary-worker"] {
            assert!(
                target.join(bin).is_file(),
                "GRANARY_PREBUILT_BINARIES=1 but {} is missing: run `cargo build --workspace \
                 --bins` first (scripts/test does)",
                target.join(bin).display(),
            );
        }
        return target;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--workspace", "--bins"])
        .status()
        .expect("run cargo build for the binaries");
    assert!(status.success(), "building the binaries failed");
    target
}

/// A sibling binary of [`binary`] (`granary-api`).
pub fn binary_named(name: &str) -> PathBuf {
    binary().with_file_name(name)
}

/// A running child process (the worker or the api).
pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// Starts `granary-worker run` with `env` (on top of nothing from the parent but PATH).
    pub fn start(env: &[(String, String)]) -> Self {
        Self::spawn(&binary(), &["run"], env)
    }

    /// Starts `granary-api serve` with `env`; it listens on `PORT` from `env`.
    pub fn start_api(env: &[(String, String)]) -> Self {
        Self::spawn(&binary_named("granary-api"), &["serve"], env)
    }

    /// Starts `exe args…` with `env` (on top of nothing from the parent but PATH).
    pub fn spawn(exe: &std::path::Path, args: &[&str], env: &[(String, String)]) -> Self {
        let mut cmd = Command::new(exe);
        cmd.args(args)
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
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        Self { child }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (`VmHWM` in /proc), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits until this process's job runtime has registered its queue workers (their ids carry
    /// the pid), so a SIGTERM sent next tests the graceful shutdown rather than a process that
    /// has not reached `main` yet (whose SIGTERM is the operating system's default action).
    pub async fn wait_registered(&self, pool: &sqlx::PgPool, timeout: std::time::Duration) {
        let pattern = format!("%:{}:%", self.child.id());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_workers WHERE id LIKE $1")
                .bind(&pattern)
                .fetch_one(pool)
                .await
                .expect("count workers");
            if n > 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker {} did not register within {timeout:?}",
                self.child.id()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
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

/// Runs `granary-worker <args>` to completion with `env` (and nothing else from the parent but
/// PATH); returns the exit code and stdout. Runs on a blocking thread so that the test's own
/// servers (JWKS, Resend stand-ins) keep answering the child meanwhile.
pub async fn cli(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let (code, out, _) = cli_all(env, args, false).await;
    (code, out)
}

/// [`cli`], with what the command wrote to stderr (errors) as well.
pub async fn cli_errors(env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    cli_all(env, args, true).await
}

async fn cli_all(env: &[(String, String)], args: &[&str], errors: bool) -> (i32, String, String) {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_blocking(&env, &args, errors)
    })
    .await
    .expect("cli thread")
}

fn cli_blocking(env: &[(String, String)], args: &[&str], errors: bool) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "night-operator");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(if errors {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .output()
        .expect("run granary-worker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
