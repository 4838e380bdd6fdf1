//! Real Apache Kafka brokers for the integration tests.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/kafka.rs"]
//! mod kafka_support;
//! use kafka_support::{Broker, KAFKA_3};
//! ```
//!
//! [`Broker::start`] resolves the broker jars with `scripts/kafka-jars.sh` (Maven Central
//! through the machine's Maven, cached between runs), formats a fresh KRaft data dir and
//! starts a single-node broker (combined broker + controller) on free loopback ports. Every
//! wait is bounded; on failure the test panics with the broker's log, so a test that needs a
//! broker fails (never skips) when the broker cannot start. The broker process is killed
//! when the `Broker` is dropped (also while a test panics), and a watchdog shell kills it
//! when the test process dies without running destructors (abort, SIGKILL, a `static`).
//!
//! Needs `java` (17+; `JAVA_HOME` is honoured), `mvn`, `bash` and `flock`. Set
//! `CHANGEFEED_KAFKA_KEEP=1` to keep every broker's directory (config, `broker.log`, data);
//! it is always kept when the test panics.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use kafka::client::{FetchOffset, KafkaClient};
use kafka::consumer::Consumer;

/// The Apache Kafka 3.x release the tests run against (newest 3.9.x on Maven Central).
pub const KAFKA_3: &str = "3.9.2";
/// A Kafka 4.x release: the sink must refuse it (protocol v0 was removed in 4.0).
pub const KAFKA_4: &str = "4.1.2";

/// Bound for resolving the jars (a first run downloads about 60 MB from Maven Central).
const JARS_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound for one broker start (format + JVM start + KRaft election + unfencing).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one run of a Kafka command-line tool (TopicCommand, StorageTool).
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for a new topic to have a leader on every partition.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for a killed broker process to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two checks in a poll loop (every loop also has a deadline).
const POLL: Duration = Duration::from_millis(25);
/// How much of the broker log a failure message shows.
const LOG_TAIL_LINES: usize = 150;

/// Runs the JVM given as its arguments and kills it with SIGKILL as soon as a line arrives
/// on stdin or stdin reaches EOF, i.e. when the test process closes the pipe or dies by any
/// means. Exits with the JVM's status once the JVM is gone, so `wait` on this shell means
/// the broker process no longer exists (its ports and files are released).
const WATCHDOG: &str = r#"
"$@" </dev/null &
jvm=$!
exec 3<&0
( read -r _ <&3; kill -9 "$jvm" 2>/dev/null ) &
watcher=$!
exec 3<&-
wait "$jvm"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// A running (or killed) single-node Apache Kafka broker.
pub struct Broker {
    version: String,
    libs: PathBuf,
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    extra_config: Vec<(String, String)>,
    process: Option<Child>,
}

/// One message read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    pub partition: i32,
    pub offset: i64,
    /// Empty when the message has no key.
    pub key: Vec<u8>,
    /// Empty when the message has no value.
    pub value: Vec<u8>,
}

/// What a Kafka command-line tool printed.
#[derive(Debug)]
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for ToolOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

impl Broker {
    /// Starts a broker of Apache Kafka `version` (e.g. [`KAFKA_3`]) and waits until it
    /// serves requests. Panics, with the broker log, when it cannot start within 60 s.
    pub fn start(version: &str) -> Broker {
        Broker::start_with_config(version, &[])
    }

    /// Like [`Broker::start`], with extra (or overriding) `server.properties` entries,
    /// e.g. `[("message.max.bytes", "2000000")]`.
    pub fn start_with_config(version: &str, extra: &[(&str, &str)]) -> Broker {
        let libs = kafka_libs(version);
        let dir = new_temp_dir();
        let mut broker = Broker {
            version: version.to_owned(),
            libs,
            dir,
            port: 0,
            controller_port: 0,
            extra_config: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            process: None,
        };
        write_log_configs(&broker.dir);
        // A port picked here can in principle be taken by another process before the JVM
        // binds it; such a start is retried on new ports.
        for attempt in 1..=3 {
            let (port, controller_port) = free_port_pair();
            broker.port = port;
            broker.controller_port = controller_port;
            let data = broker.data_dir();
            if data.exists() {
                fs::remove_dir_all(&data).expect("remove data dir");
            }
            broker.write_server_properties();
            broker.format_storage();
            match broker.launch_and_wait() {
                Ok(()) => return broker,
                Err(why)
                    if attempt < 3 && broker.log_since(0).contains("Address already in use") =>
                {
                    eprintln!("kafka broker: port clash ({why}), retrying on other ports");
                }
                Err(why) => broker.fail(&format!("Kafka {version} broker did not start: {why}")),
            }
        }
        unreachable!()
    }

    /// `127.0.0.1:PORT` of the broker's PLAINTEXT listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The broker's temporary directory (config, `broker.log`, `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// The whole broker log so far (all starts of this broker).
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    /// The directory holding the broker's jars (`java -cp 'DIR/*'`).
    pub fn libs(&self) -> &Path {
        &self.libs
    }

    /// Whether the broker process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.process.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the broker with SIGKILL (no clean shutdown) and waits until the process is
    /// gone. Does nothing when it is not running.
    pub fn kill(&mut self) {
        let Some(mut child) = self.process.take() else {
            return;
        };
        if let Some(mut stdin) = child.stdin.take() {
            // A closed pipe (the broker died already) is fine.
            let _ = stdin.write_all(b"kill\n");
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                _ => {
                    // The watchdog shell is stuck: kill it; its watcher subshell sees EOF on
                    // the now writer-less pipe and kills the JVM.
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "kafka broker: watchdog did not exit within {KILL_TIMEOUT:?}; killed it"
                    );
                    return;
                }
            }
        }
    }

    /// Restarts the broker on the same ports with the same data (after [`Broker::kill`],
    /// or kills it first) and waits until it serves requests again.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.launch_and_wait() {
            self.fail(&format!(
                "Kafka {} broker did not restart: {why}",
                self.version
            ));
        }
    }

    /// Creates a topic with Kafka's own TopicCommand (replication factor 1) and waits
    /// until every partition has a leader. Panics (with the broker log) on failure.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with_config(name, partitions, &[]);
    }

    /// Like [`Broker::create_topic`], with topic configs, e.g.
    /// `[("message.timestamp.type", "LogAppendTime"), ("max.message.bytes", "100000")]`.
    pub fn create_topic_with_config(&self, name: &str, partitions: u32, config: &[(&str, &str)]) {
        self.run_topic_create(name, partitions, config);
        self.wait_for_leaders(&[(name, partitions)]);
    }

    /// Creates several topics `(name, partitions)` at once: the TopicCommand runs go in
    /// parallel, then one `--describe` poll covers them all. Cheaper than one
    /// [`Broker::create_topic`] per topic.
    pub fn create_topics(&self, topics: &[(&str, u32)]) {
        thread::scope(|scope| {
            let runs: Vec<_> = topics
                .iter()
                .map(|&(name, partitions)| {
                    scope.spawn(move || {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.run_topic_create(name, partitions, &[])
                        }))
                    })
                })
                .collect();
            for run in runs {
                if let Err(panic) = run.join().expect("topic creation thread") {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        self.wait_for_leaders(topics);
    }

    fn run_topic_create(&self, name: &str, partitions: u32, config: &[(&str, &str)]) {
        let bootstrap = self.bootstrap();
        let partitions_arg = partitions.to_string();
        let mut args = vec![
            "--bootstrap-server",
            &bootstrap,
            "--create",
            "--topic",
            name,
            "--partitions",
            &partitions_arg,
            "--replication-factor",
            "1",
        ];
        let configs: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for c in &configs {
            args.push("--config");
            args.push(c);
        }
        let out = self.run_tool("org.apache.kafka.tools.TopicCommand", &args, TOOL_TIMEOUT);
        if !out.status.success() {
            self.fail(&format!("TopicCommand --create {name} failed: {out}"));
        }
    }

    /// Polls `TopicCommand --describe` until every partition of the `topics`
    /// `(name, partitions)` has a leader, then checks that the `kafka` crate's metadata
    /// sees the same (what a producer created afterwards will see).
    fn wait_for_leaders(&self, topics: &[(&str, u32)]) {
        let deadline = Instant::now() + TOPIC_TIMEOUT;
        let bootstrap = self.bootstrap();
        // --describe takes a regular expression; topic names are [A-Za-z0-9._-].
        let pattern = format!(
            "^({})$",
            topics
                .iter()
                .map(|(name, _)| name.replace('.', "\\."))
                .collect::<Vec<_>>()
                .join("|")
        );
        let args = [
            "--bootstrap-server",
            &bootstrap,
            "--describe",
            "--topic",
            &pattern,
        ];
        loop {
            let out = self.run_tool("org.apache.kafka.tools.TopicCommand", &args, TOOL_TIMEOUT);
            let led = partitions_with_leader(&out.stdout);
            let ready = topics.iter().all(|(name, partitions)| {
                (0..*partitions as i32).all(|p| led.contains(&(name.to_string(), p)))
            });
            if out.status.success() && ready {
                break;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "topics {topics:?}: not every partition had a leader within \
                     {TOPIC_TIMEOUT:?}; last describe: {out}"
                ));
            }
            thread::sleep(POLL);
        }
        loop {
            let mut client = KafkaClient::new(vec![bootstrap.clone()]);
            let last = match client.load_metadata_all() {
                Ok(()) => {
                    let missing: Vec<String> = topics
                        .iter()
                        .filter_map(
                            |&(name, partitions)| match client.topics().partitions(name) {
                                Some(ps)
                                    if ps.len() == partitions as usize
                                        && ps.available_ids().len() == partitions as usize =>
                                {
                                    None
                                }
                                Some(ps) => Some(format!(
                                    "{name}: {} partitions, {} with a leader",
                                    ps.len(),
                                    ps.available_ids().len()
                                )),
                                None => Some(format!("{name}: not in metadata")),
                            },
                        )
                        .collect();
                    if missing.is_empty() {
                        return;
                    }
                    missing.join("; ")
                }
                Err(e) => format!("metadata request failed: {e:?}"),
            };
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the kafka crate's metadata did not show every partition of {topics:?} \
                     with a leader within {TOPIC_TIMEOUT:?}; last: {last}"
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Runs a Kafka command-line tool (a main class from the broker's jars, e.g.
    /// `org.apache.kafka.tools.ProducerPerformance`) with a bounded wait; the tool's own
    /// logging goes (at WARN) to its stderr. Panics when it does not end within `timeout`.
    pub fn run_tool(&self, main_class: &str, args: &[&str], timeout: Duration) -> ToolOutput {
        run_java(
            &self.libs,
            &self.dir,
            main_class,
            &tool_jvm_args(&self.dir, &self.version),
            args,
            timeout,
        )
    }

    /// Panics with `msg`, the broker log's tail and where the full log is (the temporary
    /// directory is kept when the test panics).
    fn fail(&self, msg: &str) -> ! {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        panic!(
            "{msg}\n----- last {LOG_TAIL_LINES} lines of {} -----\n{tail}\n----- end of broker log -----",
            self.log_path().display()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_since(&self, offset: u64) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let mut bytes = Vec::new();
            let _ = io::Seek::seek(&mut f, io::SeekFrom::Start(offset));
            let _ = f.read_to_end(&mut bytes);
            s = String::from_utf8_lossy(&bytes).into_owned();
        }
        s
    }

    fn write_server_properties(&self) {
        let mut props: Vec<(String, String)> = [
            ("process.roles", "broker,controller".to_owned()),
            ("node.id", "1".to_owned()),
            (
                "controller.quorum.voters",
                format!("1@127.0.0.1:{}", self.controller_port),
            ),
            (
                "listeners",
                format!(
                    "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    self.port, self.controller_port
                ),
            ),
            (
                "advertised.listeners",
                format!("PLAINTEXT://127.0.0.1:{}", self.port),
            ),
            ("controller.listener.names", "CONTROLLER".to_owned()),
            ("inter.broker.listener.name", "PLAINTEXT".to_owned()),
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_owned(),
            ),
            ("log.dirs", self.data_dir().display().to_string()),
            ("auto.create.topics.enable", "false".to_owned()),
            ("num.partitions", "1".to_owned()),
            ("num.network.threads", "2".to_owned()),
            ("num.io.threads", "2".to_owned()),
            ("offsets.topic.replication.factor", "1".to_owned()),
            ("offsets.topic.num.partitions", "1".to_owned()),
            ("transaction.state.log.replication.factor", "1".to_owned()),
            ("transaction.state.log.min.isr", "1".to_owned()),
            ("group.initial.rebalance.delay.ms", "0".to_owned()),
            // A broker killed with SIGKILL stays registered until its session times out
            // (default 9 s); a restarted one cannot register before. Keep that short.
            ("broker.session.timeout.ms", "3000".to_owned()),
            ("broker.heartbeat.interval.ms", "500".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if major_version(&self.version) >= 4 {
            props.push((
                "share.coordinator.state.topic.replication.factor".into(),
                "1".into(),
            ));
            props.push(("share.coordinator.state.topic.min.isr".into(), "1".into()));
        }
        for (k, v) in &self.extra_config {
            props.retain(|(key, _)| key != k);
            props.push((k.clone(), v.clone()));
        }
        let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(self.dir.join("server.properties"), text).expect("write server.properties");
    }

    /// Formats the KRaft data dir: one StorageTool run with a cluster id made here (saves
    /// the JVM start of `StorageTool random-uuid`).
    fn format_storage(&self) {
        let cluster_id = random_cluster_id();
        let props = self.dir.join("server.properties").display().to_string();
        let args = [
            "format",
            "-t",
            &cluster_id,
            "-c",
            &props,
            "--ignore-formatted",
        ];
        let out = self.run_tool("kafka.tools.StorageTool", &args, TOOL_TIMEOUT);
        if !out.status.success() {
            self.fail(&format!("StorageTool format failed: {out}"));
        }
    }

    /// Starts the broker JVM (under the watchdog shell) and waits until it has logged
    /// "Kafka Server started" and answers an ApiVersions request.
    fn launch_and_wait(&mut self) -> Result<(), String> {
        let log_path = self.log_path();
        let log_start = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open broker log");
        let log_err = log.try_clone().expect("clone broker log handle");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("kafka-broker-watchdog")
            .arg(java())
            .args(broker_jvm_args(&self.dir, &self.version))
            .arg("-cp")
            .arg(classpath(&self.libs))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot spawn sh/java: {e}"))?;
        self.process = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.process.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.process = None;
                    return Err(format!("the broker process exited with {status}"));
                }
            }
            if self.log_since(log_start).contains("Kafka Server started") {
                break;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "no \"Kafka Server started\" within {START_TIMEOUT:?}"
                ));
            }
            thread::sleep(POLL);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match api_versions(&self.bootstrap(), left.max(Duration::from_secs(1))) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.kill();
                Err(format!(
                    "started, but ApiVersions on {} failed: {e}",
                    self.bootstrap()
                ))
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() || std::env::var_os("CHANGEFEED_KAFKA_KEEP").is_some() {
            eprintln!(
                "kafka broker: keeping {} (broker.log, data/) for inspection",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Reads `topic` from the earliest offset with the `kafka` crate's `Consumer` (no group)
/// until at least `expected_count` messages arrived and every partition is read up to its
/// end offset as of that moment. Returns every message read (duplicates included), sorted
/// by partition and offset. Panics when that does not happen within `timeout`.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    expected_count: usize,
    timeout: Duration,
) -> Vec<ConsumedMessage> {
    let deadline = Instant::now() + timeout;
    let mut consumer = Consumer::from_hosts(vec![bootstrap.to_owned()])
        .with_topic(topic.to_owned())
        .with_fallback_offset(FetchOffset::Earliest)
        .with_fetch_max_wait_time(Duration::from_millis(100))
        .with_fetch_min_bytes(1)
        .with_fetch_max_bytes_per_partition(4 << 20)
        .with_retry_max_bytes_limit(64 << 20)
        .create()
        .unwrap_or_else(|e| panic!("read_all: cannot create a consumer of {topic}: {e:?}"));
    let mut out: Vec<ConsumedMessage> = Vec::with_capacity(expected_count);
    // Next offset to read per partition, and the end offsets to reach once
    // `expected_count` messages are in.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut ends: Option<Vec<(i32, i64)>> = None;
    loop {
        if out.len() >= expected_count && ends.is_none() {
            let offsets = consumer
                .client_mut()
                .fetch_topic_offsets(topic, FetchOffset::Latest)
                .unwrap_or_else(|e| panic!("read_all: end offsets of {topic}: {e:?}"));
            ends = Some(offsets.iter().map(|o| (o.partition, o.offset)).collect());
        }
        if let Some(ends) = &ends {
            let done = ends
                .iter()
                .all(|(p, end)| *end == 0 || next.get(p).is_some_and(|n| n >= end));
            if done {
                break;
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "read_all: {topic}: read {} messages (expected at least {expected_count}) \
                 within {timeout:?}; next offsets {next:?}, end offsets {ends:?}",
                out.len()
            );
        }
        let sets = consumer
            .poll()
            .unwrap_or_else(|e| panic!("read_all: poll of {topic}: {e:?}"));
        for set in sets.iter() {
            for m in set.messages() {
                out.push(ConsumedMessage {
                    partition: set.partition(),
                    offset: m.offset,
                    key: m.key.to_vec(),
                    value: m.value.to_vec(),
                });
                next.insert(set.partition(), m.offset + 1);
            }
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

/// One entry of an ApiVersions response: `(api_key, min_version, max_version)`.
pub type ApiVersionRange = (i16, i16, i16);

/// Sends an ApiVersions v0 request (api_key 18) over a plain TCP connection and returns
/// the broker's supported version range of every API.
pub fn api_versions(addr: &str, timeout: Duration) -> io::Result<Vec<ApiVersionRange>> {
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x0CDC;
    const CLIENT_ID: &[u8] = b"changefeed";

    let mut stream = None;
    let mut last_err = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    // Request header v1: api_key, api_version, correlation_id, client_id (int16 length +
    // bytes); the v0 body is empty. The frame starts with its length (int32).
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&API_VERSIONS.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    req.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    req.extend_from_slice(CLIENT_ID);
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    stream.write_all(&frame)?;

    // Response: length (int32), header v0 = correlation_id (int32), body v0 = error_code
    // (int16), [api_key int16, min_version int16, max_version int16] (int32 count).
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(10..=1 << 20).contains(&len) {
        return Err(bad_data(format!("ApiVersions response length {len}")));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    let int16 = |at: usize| i16::from_be_bytes([body[at], body[at + 1]]);
    let int32 =
        |at: usize| i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    if int32(0) != CORRELATION_ID {
        return Err(bad_data(format!("ApiVersions correlation id {}", int32(0))));
    }
    let error_code = int16(4);
    if error_code != 0 {
        return Err(bad_data(format!("ApiVersions error code {error_code}")));
    }
    let count = int32(6);
    if count < 0 || 10 + count as usize * 6 > body.len() {
        return Err(bad_data(format!("ApiVersions entry count {count}")));
    }
    Ok((0..count as usize)
        .map(|i| {
            let at = 10 + i * 6;
            (int16(at), int16(at + 2), int16(at + 4))
        })
        .collect())
}

/// The lowest Fetch (api_key 1) version the broker accepts: 0 up to Kafka 3.9, 4 from
/// Kafka 4.0 on (KIP-896). `None` if the broker does not list Fetch.
pub fn fetch_min_version(addr: &str, timeout: Duration) -> io::Result<Option<i16>> {
    const FETCH: i16 = 1;
    Ok(api_versions(addr, timeout)?
        .into_iter()
        .find(|(key, _, _)| *key == FETCH)
        .map(|(_, min, _)| min))
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Directory with the jars of Kafka `version`, from `scripts/kafka-jars.sh` (run once per
/// version and test process; the script itself caches across runs).
pub fn kafka_libs(version: &str) -> PathBuf {
    static LIBS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut cache = LIBS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = cache.get(version) {
        return p.clone();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-jars.sh");
    let work = new_temp_dir();
    let stdout_path = work.join("stdout");
    let stderr_path = work.join("stderr");
    let mut child = Command::new("bash")
        .arg(&script)
        .arg(version)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("create stdout file"))
        .stderr(File::create(&stderr_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let status = wait_bounded(&mut child, JARS_TIMEOUT);
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = fs::remove_dir_all(&work);
    let libs = PathBuf::from(stdout.trim());
    match status {
        Some(s) if s.success() && libs.join(format!("kafka_2.13-{version}.jar")).is_file() => {}
        _ => panic!(
            "{} {version} failed ({status:?}; a test needing a Kafka broker cannot run):\n\
             stdout: {stdout}\nstderr: {stderr}",
            script.display()
        ),
    }
    cache.insert(version.to_owned(), libs.clone());
    libs
}

fn run_java(
    libs: &Path,
    dir: &Path,
    main_class: &str,
    jvm_args: &[String],
    args: &[&str],
    timeout: Duration,
) -> ToolOutput {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let stdout_path = dir.join(format!("tool-{n}.out"));
    let stderr_path = dir.join(format!("tool-{n}.err"));
    let mut child = Command::new(java())
        .args(jvm_args)
        .arg("-cp")
        .arg(classpath(libs))
        .arg(main_class)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("create tool stdout"))
        .stderr(File::create(&stderr_path).expect("create tool stderr"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run java {main_class}: {e}"));
    let status = wait_bounded(&mut child, timeout);
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = fs::remove_file(&stdout_path);
    let _ = fs::remove_file(&stderr_path);
    match status {
        Some(status) => ToolOutput {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "java {main_class} {args:?} did not finish within {timeout:?} (killed)\n\
             stdout: {stdout}\nstderr: {stderr}"
        ),
    }
}

/// Waits for `child` at most `timeout`; kills it and returns `None` when it is still
/// running then.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").is_file() => {
            Path::new(&home).join("bin/java")
        }
        _ => PathBuf::from("java"),
    }
}

fn classpath(libs: &Path) -> String {
    format!("{}/*", libs.display())
}

fn major_version(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Kafka 3.x logs through log4j 1 (reload4j), 4.x through log4j2.
fn log_config_args(dir: &Path, version: &str, name: &str) -> Vec<String> {
    if major_version(version) >= 4 {
        vec![format!(
            "-Dlog4j2.configurationFile={}",
            dir.join(format!("{name}-log4j2.properties")).display()
        )]
    } else {
        vec![format!(
            "-Dlog4j.configuration=file:{}",
            dir.join(format!("{name}-log4j.properties")).display()
        )]
    }
}

fn broker_jvm_args(dir: &Path, version: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "-Xmx512m",
        "-Xms128m",
        "-XX:+ExitOnOutOfMemoryError",
        "-XX:-UsePerfData",
        "-Djava.awt.headless=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(log_config_args(dir, version, "broker"));
    args
}

/// Short-lived tools: client JIT only and the serial GC start fastest.
fn tool_jvm_args(dir: &Path, version: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-XX:-UsePerfData",
        "-Djava.awt.headless=true",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(log_config_args(dir, version, "tools"));
    args
}

/// Broker: INFO to stdout (the broker log). Tools: WARN to stderr, so stdout carries only
/// the tool's own output.
fn write_log_configs(dir: &Path) {
    let log4j = |level: &str, target: &str| {
        format!(
            "log4j.rootLogger={level}, out\n\
             log4j.appender.out=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.out.Target={target}\n\
             log4j.appender.out.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
    };
    let log4j2 = |level: &str, target: &str| {
        format!(
            "status = warn\n\
             appender.out.type = Console\n\
             appender.out.name = OUT\n\
             appender.out.target = {target}\n\
             appender.out.layout.type = PatternLayout\n\
             appender.out.layout.pattern = [%d] %p %m (%c)%n\n\
             rootLogger.level = {level}\n\
             rootLogger.appenderRef.out.ref = OUT\n"
        )
    };
    let files = [
        ("broker-log4j.properties", log4j("INFO", "System.out")),
        ("tools-log4j.properties", log4j("WARN", "System.err")),
        ("broker-log4j2.properties", log4j2("info", "SYSTEM_OUT")),
        ("tools-log4j2.properties", log4j2("warn", "SYSTEM_ERR")),
    ];
    for (name, text) in files {
        fs::write(dir.join(name), text).expect("write log config");
    }
}

/// Two distinct free loopback ports (both listeners are held until both are picked).
fn free_port_pair() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (
        a.local_addr().expect("local addr").port(),
        b.local_addr().expect("local addr").port(),
    )
}

/// A KRaft cluster id: 16 random bytes, base64url without padding (22 characters), like
/// `StorageTool random-uuid`. The first character is kept alphanumeric (a leading '-'
/// would read as a command-line flag).
fn random_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes[0] &= 0x7f; // first character in A-Z, a-f
    let mut id = String::with_capacity(22);
    let mut bits = 0u32;
    let mut nbits = 0;
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            id.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        id.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    id
}

fn new_temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "changefeed-kafka-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// `(topic, partition)` of every line of a `TopicCommand --describe` output whose leader
/// is a broker id.
fn partitions_with_leader(describe: &str) -> Vec<(String, i32)> {
    let field = |line: &str, name: &str| -> Option<String> {
        let mut it = line.split_whitespace();
        while let Some(w) = it.next() {
            if w == name {
                return it.next().map(str::to_owned);
            }
        }
        None
    };
    describe
        .lines()
        .filter_map(|line| {
            let topic = field(line, "Topic:")?;
            let partition = field(line, "Partition:")?.parse::<i32>().ok()?;
            let leader = field(line, "Leader:")?.parse::<i32>().ok()?;
            (leader >= 0).then_some((topic, partition))
        })
        .collect()
}

/// One canal-json row message read back: `(schema.table, id, commit ts)`, for rows whose
/// key column is `id`.
pub fn decode_canal_row(m: &ConsumedMessage) -> (String, u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(&m.value).expect("a canal-json message");
    let table = format!(
        "{}.{}",
        v["database"].as_str().expect("database"),
        v["table"].as_str().expect("table")
    );
    let id = v["data"][0]["id"]
        .as_str()
        .expect("data[0].id")
        .parse()
        .expect("a numeric id");
    let ts = v["_tidb"]["commitTs"].as_u64().expect("_tidb.commitTs");
    (table, id, ts)
}
