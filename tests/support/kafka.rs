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

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The Apache Kafka 3.x release the tests run against (newest 3.9.x on Maven Central).
pub const KAFKA_3: &str = "3.9.2";
/// The Apache Kafka 4.x release the tests run against (newest on Maven Central): KRaft
/// only, no protocol v0 (KIP-896), so the kafka-rust client must refuse it.
pub const KAFKA_4: &str = "4.4.0";

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
    /// The secure listeners and their ports ([`Broker::start_secure`]; empty otherwise).
    secure: Vec<(Listener, u16)>,
    /// The certificates of the TLS listeners ([`Broker::start_secure`]).
    tls: Option<TlsFiles>,
    process: Option<Child>,
}

/// The SASL user every SASL listener of [`Broker::start_secure`] knows (PLAIN and both
/// SCRAM mechanisms).
pub const SASL_USER: &str = "alice";
/// [`SASL_USER`]'s password (letters and digits only: it passes through StorageTool's
/// `--add-scram` syntax and a JAAS line unquoted). Tests grep output for it.
pub const SASL_PASSWORD: &str = "AlicePw7f3c9d2e";

/// A listener of a broker from [`Broker::start_secure`]; its address is
/// [`Broker::listener`]. Every TLS listener's certificate is signed by the test CA
/// ([`TlsFiles::ca`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// PLAINTEXT, the one [`Broker::bootstrap`] names.
    Plaintext,
    /// TLS; the certificate is for `127.0.0.1` and `localhost`.
    Ssl,
    /// TLS that requires a client certificate signed by the test CA (mutual TLS).
    Mtls,
    /// SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) without TLS.
    SaslPlaintext,
    /// SASL (the same mechanisms) over TLS.
    SaslSsl,
    /// TLS with a certificate for another host (`wrong-host.invalid`): hostname mismatch.
    BadHost,
    /// TLS with a certificate that expired (valid 2020-01-01 to 2021-01-01).
    Expired,
}

impl Listener {
    /// The listeners besides PLAINTEXT, in the order their ports are allocated.
    pub const SECURE: [Listener; 6] = [
        Listener::Ssl,
        Listener::Mtls,
        Listener::SaslPlaintext,
        Listener::SaslSsl,
        Listener::BadHost,
        Listener::Expired,
    ];

    /// The listener's name in `server.properties`.
    fn name(self) -> &'static str {
        match self {
            Listener::Plaintext => "PLAINTEXT",
            Listener::Ssl => "SSL",
            Listener::Mtls => "MTLS",
            Listener::SaslPlaintext => "SASL_PLAINTEXT",
            Listener::SaslSsl => "SASL_SSL",
            Listener::BadHost => "BADHOST",
            Listener::Expired => "EXPIRED",
        }
    }

    /// Its security protocol.
    fn protocol(self) -> &'static str {
        match self {
            Listener::Plaintext => "PLAINTEXT",
            Listener::Ssl | Listener::Mtls | Listener::BadHost | Listener::Expired => "SSL",
            Listener::SaslPlaintext => "SASL_PLAINTEXT",
            Listener::SaslSsl => "SASL_SSL",
        }
    }
}

/// PEM files the harness generated for a broker from [`Broker::start_secure`].
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The test CA's certificate: every TLS listener's certificate is signed by it.
    pub ca: PathBuf,
    /// Another CA's certificate, which signed nothing the broker uses.
    pub untrusted_ca: PathBuf,
    /// A client certificate signed by the test CA (for [`Listener::Mtls`]).
    pub client_cert: PathBuf,
    /// Its private key (PKCS#8, unencrypted).
    pub client_key: PathBuf,
    /// The broker's key stores (key + certificate chain, Kafka's PEM key store format).
    server: PathBuf,
    bad_host: PathBuf,
    expired: PathBuf,
}

impl TlsFiles {
    /// Generates the CAs and certificates into `dir/tls`.
    fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{
            date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let dir = dir.join("tls");
        fs::create_dir_all(&dir).expect("create tls dir");
        let write = |name: &str, text: String| -> PathBuf {
            let path = dir.join(name);
            fs::write(&path, text).expect("write a PEM file");
            path
        };
        let ca = |name: &str| {
            let key = KeyPair::generate().expect("a CA key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).expect("a CA certificate");
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("changefeed test CA");
        let (untrusted_pem, _) = ca("changefeed untrusted CA");
        let leaf = |cn: &str, hosts: &[&str], expired: bool| -> (String, String) {
            let key = KeyPair::generate().expect("a key");
            let mut params = CertificateParams::new(
                hosts
                    .iter()
                    .filter(|h| h.parse::<std::net::IpAddr>().is_err())
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>(),
            )
            .expect("certificate params");
            for h in hosts {
                if let Ok(ip) = h.parse::<std::net::IpAddr>() {
                    params.subject_alt_names.push(SanType::IpAddress(ip));
                }
            }
            params.distinguished_name.push(DnType::CommonName, cn);
            if expired {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            let cert = params.signed_by(&key, &issuer).expect("a certificate");
            (key.serialize_pem(), cert.pem())
        };
        let store = |name: &str, (key, cert): (String, String)| write(name, key + &cert + &ca_pem);
        let server = store(
            "server.pem",
            leaf("broker", &["127.0.0.1", "localhost"], false),
        );
        let bad_host = store(
            "bad-host.pem",
            leaf("wrong-host.invalid", &["wrong-host.invalid"], false),
        );
        let expired = store(
            "expired.pem",
            leaf("broker", &["127.0.0.1", "localhost"], true),
        );
        let (client_key, client_cert) = leaf("changefeed-client", &["changefeed-client"], false);
        TlsFiles {
            ca: write("ca.pem", ca_pem.clone()),
            untrusted_ca: write("untrusted-ca.pem", untrusted_pem),
            client_cert: write("client.pem", client_cert),
            client_key: write("client.key", client_key),
            server,
            bad_host,
            expired,
        }
    }
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
    /// The record's timestamp in milliseconds (create time unless the topic says
    /// `LogAppendTime`); `None` when the record has none.
    pub timestamp: Option<i64>,
    /// The record's headers, in order (a header without a value has an empty one).
    pub headers: Vec<(String, Vec<u8>)>,
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
        Broker::launch(version, extra, false)
    }

    /// Starts a broker like [`Broker::start`] that also has a listener of each of
    /// [`Listener::SECURE`] (TLS, mutual TLS, SASL_PLAINTEXT, SASL_SSL, and two TLS
    /// listeners with a bad certificate), with certificates generated here
    /// ([`Broker::tls`]) and the SASL user [`SASL_USER`] for PLAIN, SCRAM-SHA-256 and
    /// SCRAM-SHA-512. Administration (topics, reading back) stays on PLAINTEXT.
    pub fn start_secure(version: &str) -> Broker {
        Broker::launch(version, &[], true)
    }

    fn launch(version: &str, extra: &[(&str, &str)], secure: bool) -> Broker {
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
            secure: Vec::new(),
            tls: None,
            process: None,
        };
        write_log_configs(&broker.dir);
        if secure {
            broker.tls = Some(TlsFiles::generate(&broker.dir));
        }
        // A port picked here can in principle be taken by another process before the JVM
        // binds it; such a start is retried on new ports.
        for attempt in 1..=3 {
            let ports = free_ports(2 + if secure { Listener::SECURE.len() } else { 0 });
            broker.port = ports[0];
            broker.controller_port = ports[1];
            if secure {
                broker.secure = Listener::SECURE
                    .into_iter()
                    .zip(ports[2..].to_vec())
                    .collect();
            }
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

    /// `127.0.0.1:PORT` of `listener`. Panics when the broker does not have it (only
    /// [`Broker::start_secure`] makes the secure ones).
    pub fn listener(&self, listener: Listener) -> String {
        if listener == Listener::Plaintext {
            return self.bootstrap();
        }
        let port = self
            .secure
            .iter()
            .find(|(l, _)| *l == listener)
            .map(|(_, port)| *port)
            .unwrap_or_else(|| panic!("this broker has no {listener:?} listener (start_secure)"));
        format!("127.0.0.1:{port}")
    }

    /// The certificates of the TLS listeners. Panics unless started with
    /// [`Broker::start_secure`].
    pub fn tls(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .expect("a broker from start_secure has TLS files")
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
    /// `(name, partitions)` has a leader, then checks that librdkafka's metadata sees
    /// the same (what a producer created afterwards will see).
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
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "3")
            .create()
            .unwrap_or_else(|e| self.fail(&format!("a metadata client: {e}")));
        for &(name, partitions) in topics {
            match topic_partitions(&client, name, deadline) {
                Ok(n) if n == partitions as i32 => {}
                Ok(n) => self.fail(&format!("{name}: {n} partitions, expected {partitions}")),
                Err(why) => self.fail(&format!(
                    "librdkafka's metadata did not show every partition of {name} with a \
                     leader within {TOPIC_TIMEOUT:?}; last: {why}"
                )),
            }
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
        if let Some(tls) = &self.tls {
            self.add_secure_properties(&mut props, tls);
        }
        for (k, v) in &self.extra_config {
            props.retain(|(key, _)| key != k);
            props.push((k.clone(), v.clone()));
        }
        let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(self.dir.join("server.properties"), text).expect("write server.properties");
    }

    /// The secure listeners' entries: listeners, their protocols, Kafka's PEM key and
    /// trust stores, client authentication on MTLS, SASL mechanisms and users.
    fn add_secure_properties(&self, props: &mut Vec<(String, String)>, tls: &TlsFiles) {
        let set = |props: &mut Vec<(String, String)>, key: &str, value: String| {
            props.retain(|(k, _)| k != key);
            props.push((key.to_owned(), value));
        };
        let get = |props: &Vec<(String, String)>, key: &str| -> String {
            props
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut listeners = get(props, "listeners");
        let mut advertised = get(props, "advertised.listeners");
        let mut map = get(props, "listener.security.protocol.map");
        for (l, port) in &self.secure {
            listeners.push_str(&format!(",{}://127.0.0.1:{port}", l.name()));
            advertised.push_str(&format!(",{}://127.0.0.1:{port}", l.name()));
            map.push_str(&format!(",{}:{}", l.name(), l.protocol()));
        }
        set(props, "listeners", listeners);
        set(props, "advertised.listeners", advertised);
        set(props, "listener.security.protocol.map", map);
        let path = |p: &Path| p.display().to_string();
        set(props, "ssl.keystore.type", "PEM".into());
        set(props, "ssl.keystore.location", path(&tls.server));
        set(props, "ssl.truststore.type", "PEM".into());
        set(props, "ssl.truststore.location", path(&tls.ca));
        set(
            props,
            "listener.name.mtls.ssl.client.auth",
            "required".into(),
        );
        set(
            props,
            "listener.name.badhost.ssl.keystore.location",
            path(&tls.bad_host),
        );
        set(
            props,
            "listener.name.expired.ssl.keystore.location",
            path(&tls.expired),
        );
        set(
            props,
            "sasl.enabled.mechanisms",
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
        );
        for listener in ["sasl_plaintext", "sasl_ssl"] {
            set(
                props,
                &format!("listener.name.{listener}.plain.sasl.jaas.config"),
                format!(
                    "org.apache.kafka.common.security.plain.PlainLoginModule required \
                     user_{SASL_USER}=\"{SASL_PASSWORD}\";"
                ),
            );
            for scram in ["scram-sha-256", "scram-sha-512"] {
                set(
                    props,
                    &format!("listener.name.{listener}.{scram}.sasl.jaas.config"),
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
                );
            }
        }
    }

    /// Formats the KRaft data dir: one StorageTool run with a cluster id made here (saves
    /// the JVM start of `StorageTool random-uuid`).
    fn format_storage(&self) {
        let cluster_id = random_cluster_id();
        let props = self.dir.join("server.properties").display().to_string();
        let mut args: Vec<String> = [
            "format",
            "-t",
            &cluster_id,
            "-c",
            &props,
            "--ignore-formatted",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.tls.is_some() {
            // SCRAM credentials live in the cluster metadata: KRaft adds them at format.
            for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                args.push("--add-scram".into());
                args.push(format!(
                    "{mechanism}=[name={SASL_USER},password={SASL_PASSWORD}]"
                ));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
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

/// Reads `topic` from the earliest offset with an rdkafka `BaseConsumer` (partitions
/// assigned, no group offsets committed) until at least `expected_count` messages arrived
/// and every partition is read up to its end offset as of that moment. Returns every
/// message read (duplicates included), sorted by partition and offset. Panics when that
/// does not happen within `timeout`. Works on every Kafka version.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    expected_count: usize,
    timeout: Duration,
) -> Vec<ConsumedMessage> {
    read_all_with(bootstrap, topic, expected_count, timeout, &[])
}

/// Like [`read_all`], with extra librdkafka consumer settings (e.g. `security.protocol`
/// and `ssl.ca.location` to read over a TLS listener).
pub fn read_all_with(
    bootstrap: &str,
    topic: &str,
    expected_count: usize,
    timeout: Duration,
    settings: &[(&str, &str)],
) -> Vec<ConsumedMessage> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "changefeed-test-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("log_level", "3");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config
        .create()
        .unwrap_or_else(|e| panic!("read_all: cannot create a consumer of {topic}: {e}"));
    let partitions = topic_partitions(&consumer, topic, deadline)
        .unwrap_or_else(|why| panic!("read_all: {topic}: {why}"));
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("a partition offset");
    }
    consumer
        .assign(&assignment)
        .unwrap_or_else(|e| panic!("read_all: assign {topic}: {e}"));
    let mut out: Vec<ConsumedMessage> = Vec::with_capacity(expected_count);
    // Next offset to read per partition, and the end offsets to reach once
    // `expected_count` messages are in.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut ends: Option<Vec<(i32, i64)>> = None;
    let mut last_error = None;
    loop {
        if out.len() >= expected_count && ends.is_none() {
            let offsets = (0..partitions)
                .map(|p| {
                    consumer
                        .fetch_watermarks(topic, p, left().max(Duration::from_secs(1)))
                        .map(|(_, high)| (p, high))
                        .unwrap_or_else(|e| panic!("read_all: end offset of {topic}/{p}: {e}"))
                })
                .collect();
            ends = Some(offsets);
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
                 within {timeout:?}; next offsets {next:?}, end offsets {ends:?}, last \
                 consumer error {last_error:?}",
                out.len()
            );
        }
        match consumer.poll(left().min(Duration::from_millis(100))) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ConsumedMessage {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    timestamp: m.timestamp().to_millis(),
                    headers,
                });
                next.insert(m.partition(), m.offset() + 1);
            }
            // Transient (a broker that restarts); the deadline bounds the wait.
            Some(Err(e)) => last_error = Some(e.to_string()),
            None => {}
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

/// The partition count of `topic` (every partition with a leader) from the metadata of
/// `client`, polled until `deadline`.
fn topic_partitions<C: Consumer>(
    client: &C,
    topic: &str,
    deadline: Instant,
) -> Result<i32, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match client.fetch_metadata(Some(topic), left.max(Duration::from_millis(100))) {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t)
                    if t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none()) =>
                {
                    return Ok(t.partitions().len() as i32)
                }
                Some(t) => format!(
                    "error {:?}, {} partitions, {} with a leader",
                    t.error(),
                    t.partitions().len(),
                    t.partitions().iter().filter(|p| p.leader() >= 0).count()
                ),
                None => "not in metadata".to_owned(),
            },
            Err(e) => format!("metadata request failed: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        thread::sleep(POLL);
    }
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

/// `n` distinct free loopback ports (every listener is held until all are picked).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
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
