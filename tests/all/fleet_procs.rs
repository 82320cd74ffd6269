//! The market's processes for the fleet tests: a real `nats-server` with JetStream on a loopback
//! port and a temporary folder, and `gridbox provide` / `gridbox check` processes whose logs
//! are read as they run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::gridbox;

/// The `nats-server` binary: `$GRIDBOX_NATS_SERVER`, else `nats-server` on the PATH (or where
/// Debian's package puts it).
fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GRIDBOX_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>()).map(|dir| dir.join("nats-server"));
    let found = on_path.chain([PathBuf::from("/usr/sbin/nats-server"), PathBuf::from("/usr/bin/nats-server")]).find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "nats-server is not installed: `apt-get install nats-server` (Debian/Ubuntu), or set GRIDBOX_NATS_SERVER to a JetStream-enabled nats-server 2.9+"
        )
    })
}

/// A free loopback port (bound, then let go: the server takes it at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `nats-server -js` on a loopback port, storing in `dir`.
pub(crate) struct Nats {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    /// Starts a server storing JetStream data in `dir` and waits until it accepts connections.
    pub(crate) fn start(dir: &Path) -> Nats {
        Self::start_on(dir, free_port())
    }

    fn start_on(dir: &Path, port: u16) -> Nats {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("nats.log")).unwrap();
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.join("jetstream"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let nats = Nats { child, port, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start: {}", std::fs::read_to_string(dir.join("nats.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(20));
        }
        nats
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it with SIGTERM and starts it again on the same port and storage.
    pub(crate) fn restart(mut self) -> Nats {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let (dir, port) = (self.dir.clone(), self.port);
        std::mem::forget(self);
        Self::start_on(&dir, port)
    }

    /// Publishes `payload` on `subject` as a plain NATS client (no JetStream acknowledgement):
    /// what any holder of the market's credentials can do.
    pub(crate) fn publish_raw(&self, subject: &str, payload: &[u8]) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut banner = [0u8; 4096];
        let _ = stream.read(&mut banner).unwrap();
        let mut message = format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nPUB {subject} {}\r\n", payload.len()).into_bytes();
        message.extend_from_slice(payload);
        message.extend_from_slice(b"\r\nPING\r\n");
        stream.write_all(&message).unwrap();
        let mut answer = Vec::new();
        let mut buffer = [0u8; 256];
        while !String::from_utf8_lossy(&answer).contains("PONG") {
            let read = stream.read(&mut buffer).unwrap();
            assert!(read > 0, "nats-server closed the connection: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buffer[..read]);
        }
        assert!(!String::from_utf8_lossy(&answer).contains("-ERR"), "{}", String::from_utf8_lossy(&answer));
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `gridbox provide` or `gridbox check` process.
pub(crate) struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
    /// Its `/metrics` URL.
    pub(crate) metrics: String,
}

impl Proc {
    /// Starts `command` (its stderr read into the log) and waits for a line containing `ready`.
    pub(crate) fn start(mut command: Command, ready: &str) -> Proc {
        let mut child = command.stderr(Stdio::piped()).spawn().expect("start the process");
        let log = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let mut proc = Proc { child, log, metrics: String::new() };
        proc.wait_for_line(ready);
        let log = proc.log();
        proc.metrics = log.split("metrics on ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or_default().to_string();
        proc
    }

    /// `gridbox provide` with `key`, `workers` and the CPU.
    pub(crate) fn provider(nats: &str, key: &Path, workers: usize) -> Proc {
        let mut command = gridbox();
        command.args(["provide", "--nats", nats, "--device", "cpu", "--metrics-addr", "127.0.0.1:0", "--workers", &workers.to_string(), "--key"]).arg(key);
        Self::start(command, "providing to")
    }

    /// `gridbox check --sample 1`: every ended job.
    pub(crate) fn checker(nats: &str) -> Proc {
        let mut command = gridbox();
        command.args(["check", "--nats", nats, "--sample", "1", "--metrics-addr", "127.0.0.1:0"]);
        Self::start(command, "checking")
    }

    /// Everything it has logged.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a line of its log contains `text`; the log so far.
    pub(crate) fn wait_for_line(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = self.log();
            if log.lines().any(|line| line.contains(text)) {
                return log;
            }
            if let Ok(Some(status)) = self.child_status() {
                panic!("the process exited ({status}) before logging {text:?}:\n{log}");
            }
            assert!(Instant::now() < deadline, "no {text:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // try_wait needs &mut; a shared handle's status is read through the pid instead.
        let alive = Path::new(&format!("/proc/{}", self.child.id())).exists();
        let zombie = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).is_ok_and(|stat| stat.contains(") Z "));
        Ok(if alive && !zombie { None } else { Some(std::os::unix::process::ExitStatusExt::from_raw(0)) })
    }

    /// Kills it with SIGKILL and waits for it.
    pub(crate) fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of metric `name` (a line `name VALUE` or `name{...} VALUE` with `labels`) on its
    /// `/metrics`.
    pub(crate) fn metric(&self, name: &str) -> u64 {
        metric(&http_get(&self.metrics), name)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET url` over plain HTTP/1.1; the body.
pub(crate) fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".to_string()));
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// The value of the metric line that starts with `name` followed by a space, 0 if absent.
pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|value| value.trim().parse().ok())).unwrap_or(0)
}
