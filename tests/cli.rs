//! The `changefeed` command, run as a user runs it: the built binary, in a fresh
//! directory as its current directory, judged by its exit status, what it prints and what
//! it writes.

#[path = "support/kafka.rs"]
mod kafka_support;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use kafka_support::{Broker, KAFKA_3};
use tempfile::TempDir;

/// Bound on any one run (the default run takes ~20 s in a debug build).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// The example change log shipped in examples/.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/changes.jsonl");

/// `changefeed` in `dir`, with the environment a user has (no RUST_LOG of ours).
fn changefeed(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_changefeed"));
    c.current_dir(dir).env_remove("RUST_LOG");
    c
}

/// Waits for `child` at most `timeout`; kills it and fails the test past that.
fn wait_bounded(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("changefeed did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to completion (stdin closed), bounded by [`RUN_TIMEOUT`].
fn run(cmd: &mut Command) -> Output {
    run_with_stdin(cmd, None)
}

fn run_with_stdin(cmd: &mut Command, stdin: Option<Vec<u8>>) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start changefeed");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).unwrap();
        b
    });
    let err = thread::spawn(move || {
        let mut b = Vec::new();
        stderr.read_to_end(&mut b).unwrap();
        b
    });
    let status = wait_bounded(&mut child, RUN_TIMEOUT);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines in a file, counted without holding it in memory.
fn count_lines(path: &Path) -> usize {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return lines;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
}

/// The number before " rows" in the summary line that starts with `verb:`.
fn summary_rows(stderr: &str, verb: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{verb}: ")))
        .unwrap_or_else(|| panic!("no {verb:?} summary in:\n{stderr}"));
    line[verb.len() + 2..]
        .split(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no row count in {line:?}"))
}

/// The checkpoint in the summary line.
fn summary_checkpoint(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("; checkpoint "))
        .unwrap_or_else(|| panic!("no checkpoint in:\n{stderr}"));
    let after = line.split("; checkpoint ").nth(1).unwrap();
    after.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn default_run_writes_one_line_per_row() {
    let dir = TempDir::new().unwrap();
    let started = Instant::now();
    let out = run(changefeed(dir.path()).arg("run"));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    eprintln!(
        "default run (8 x 100,000 rows) took {:.1?}",
        started.elapsed()
    );
    assert_eq!(
        count_lines(&dir.path().join("changefeed-out.jsonl")),
        800_000,
        "one canal-json line per row"
    );
    assert_eq!(summary_rows(&stderr, "done"), 800_000, "{stderr}");
    // Not a terminal: periodic log lines, and a final checkpoint with its time.
    assert!(stderr.contains("progress: "), "{stderr}");
    assert!(
        stderr.contains("rows/s") && stderr.contains("MB/s"),
        "{stderr}"
    );
    let checkpoint = summary_checkpoint(&stderr);
    assert!(
        changefeed::tso::physical_millis(checkpoint) > 1_700_000_000_000,
        "a wall-clock TSO: {checkpoint}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout without --json");
}

/// `producers=3` for 200 tables: three threads send (one row to each of their tables in
/// turn); every row arrives once and each table's rows are in order.
#[test]
fn gen_with_fewer_producers_than_tables_delivers_every_row_in_order() {
    let dir = TempDir::new().unwrap();
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        "gen:tables=200,rows=50,producers=3",
        "--sink-uri",
        "file:out.jsonl",
    ]));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let lines = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut next: std::collections::HashMap<String, u64> = Default::default();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let table = v["table"].as_str().unwrap().to_string();
        let id: u64 = v["data"][0]["id"].as_str().unwrap().parse().unwrap();
        let expected = next.entry(table.clone()).or_insert(1);
        assert_eq!(id, *expected, "{table}: rows in order, each once");
        *expected += 1;
    }
    assert_eq!(next.len(), 200, "every table");
    assert!(
        next.values().all(|&n| n == 51),
        "50 rows per table: {next:?}"
    );
}

/// A password variable that is not UTF-8: exit 2 naming the parameter; the value (which
/// the standard library's own error text would print) appears nowhere.
#[test]
fn a_non_utf8_password_variable_is_refused_without_printing_it() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new().unwrap();
    let out = run(changefeed(dir.path())
        .args([
            "run",
            "--sink-uri",
            "kafka://127.0.0.1:9/t?sasl-mechanism=plain&sasl-user=u&sasl-password-env=CF_TEST_PW",
        ])
        .env(
            "CF_TEST_PW",
            std::ffi::OsStr::from_bytes(b"Hunter2Secret\xff"),
        ));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("sasl-password-env") && all.contains("not valid UTF-8"),
        "{all}"
    );
    assert!(!all.contains("Hunter2"), "the password is printed: {all}");
}

#[test]
fn unknown_sink_scheme_exits_2_naming_it() {
    let dir = TempDir::new().unwrap();
    let out = run(changefeed(dir.path()).args(["run", "--sink-uri", "bogus://x"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"bogus\""), "{stderr}");
    assert!(stderr.contains("CDC:ErrSinkURIInvalid"), "{stderr}");
    assert!(
        !dir.path().join("changefeed-out.jsonl").exists(),
        "nothing ran"
    );
}

#[test]
fn bad_usage_and_bad_settings_exit_2_with_the_reason() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&[], "Usage"),
        (&["run", "--frobnicate"], "--frobnicate"),
        (&["run", "--source", "gen:tabels=3"], "\"tabels\""),
        (&["run", "--source", "ftp://x"], "unknown source"),
        (&["run", "--source", "file:missing.jsonl"], "missing.jsonl"),
        (&["run", "--memory-quota", "0"], "greater than 0"),
        (&["run", "--changefeed-id", ""], "changefeed_id"),
        (
            &["run", "--sink-uri", "kafka://127.0.0.1:9/t?required-acks=7"],
            "required-acks",
        ),
        (&["run", "--source", "-", "--supervise"], "standard input"),
        (
            &["run", "--supervise", "--backoff-max", "1000years"],
            "between 1ms and 24h",
        ),
        (
            &[
                "run",
                "--supervise",
                "--backoff-initial",
                "1m",
                "--backoff-max",
                "1s",
            ],
            "backoff",
        ),
    ];
    for (args, reason) in cases {
        let out = run(changefeed(dir.path()).args(*args));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn malformed_line_reports_its_number_and_keeps_what_came_before() {
    let dir = TempDir::new().unwrap();
    let ts = |i: u64| changefeed::tso::compose(1_767_225_600_000 + i, 0);
    let row = |table: &str, i: u64| {
        format!(
            r#"{{"op":"insert","schema":"shop","table":"{table}","commit_ts":{},"columns":[{{"name":"id","value":{i},"key":true}}]}}"#,
            ts(i)
        )
    };
    let input = [
        row("orders", 1),
        row("customers", 2),
        String::new(), // blank lines are skipped, and counted
        row("orders", 3),
        r#"{"op":"insert","schema":"shop","table":"orders","commit_ts":5,"columns":[{"name":"id","value":4}"#
            .to_string(),
        row("orders", 6),
    ]
    .join("\n");
    fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        "file:in.jsonl",
        "--sink-uri",
        "file:out.jsonl",
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 5: "), "{stderr}");
    assert!(stderr.contains("EOF while parsing"), "{stderr}");
    let written = fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let commit_ts: Vec<u64> = written
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["_tidb"]["commitTs"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        commit_ts.len(),
        3,
        "the rows before the bad line: {written}"
    );
    for i in [1, 2, 3] {
        assert!(commit_ts.contains(&ts(i)), "row {i} was delivered");
    }
    assert!(!commit_ts.contains(&ts(6)), "nothing after the bad line");
    assert_eq!(summary_rows(&stderr, "failed"), 3, "{stderr}");
}

#[test]
fn out_of_order_commit_ts_is_a_bad_line_too() {
    let dir = TempDir::new().unwrap();
    let input = "{\"op\":\"insert\",\"schema\":\"s\",\"table\":\"t\",\"commit_ts\":9,\"columns\":[]}\n\
                 {\"op\":\"insert\",\"schema\":\"s\",\"table\":\"t\",\"commit_ts\":8,\"columns\":[]}\n";
    let out = run_with_stdin(
        changefeed(dir.path()).args(["run", "--source", "-", "--sink-uri", "blackhole://"]),
        Some(input.as_bytes().to_vec()),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2: commit ts of table s.t went backwards"),
        "{stderr}"
    );
}

#[test]
fn the_example_change_log_replays_from_a_file_and_from_stdin() {
    let dir = TempDir::new().unwrap();
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        &format!("file:{EXAMPLE}"),
        "--sink-uri",
        "file:out.jsonl",
        "--json",
    ]));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // 2 CREATE, 5 rows, 1 ALTER, 2 rows: one line each; watermarks write nothing.
    assert_eq!(count_lines(&dir.path().join("out.jsonl")), 10);
    let final_hb: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(final_hb["closed"], true);
    assert!(final_hb["error"].is_null());
    // The last line is a watermark for every table: the checkpoint reaches it.
    let last_resolved = 463_267_590_045_696_000u64;
    assert_eq!(final_hb["checkpoint_ts"], last_resolved);
    assert_eq!(summary_checkpoint(&stderr), last_resolved);
    assert!(stderr.contains("(2026-01-01T00:00:09.000Z)"), "{stderr}");

    let out = run_with_stdin(
        changefeed(dir.path()).args(["run", "--source", "-", "--sink-uri", "file:stdin.jsonl"]),
        Some(fs::read(EXAMPLE).unwrap()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read(dir.path().join("stdin.jsonl")).unwrap().len(),
        fs::read(dir.path().join("out.jsonl")).unwrap().len(),
    );
}

#[test]
fn disk_full_exits_1_with_the_error() {
    let dir = TempDir::new().unwrap();
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        "gen:rows=1000",
        "--sink-uri",
        "file:///dev/full",
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CDC:ErrSinkIO"), "{stderr}");
    assert!(
        stderr.contains("writing /dev/full: No space left on device"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn json_prints_the_error_heartbeat_on_failure() {
    let dir = TempDir::new().unwrap();
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        "gen:rows=1000",
        "--sink-uri",
        "file:///dev/full",
        "--changefeed-id",
        "cli-json",
        "--json",
    ]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let hb: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(hb["changefeed"], "cli-json");
    assert_eq!(hb["error"]["code"], "CDC:ErrSinkIO");
    let message = hb["error"]["message"].as_str().unwrap();
    assert!(message.contains("No space left on device"), "{message}");
    assert!(hb["error"]["time"].as_str().unwrap().ends_with('Z'));
    assert!(hb["error"]["node"].is_string());
    // Nothing was acknowledged: the checkpoint is at most just below the first row sent.
    assert!(hb["checkpoint_ts"].as_u64().unwrap() < changefeed::tso::now());
    assert_eq!(hb["dispatchers"].as_array().unwrap().len(), 8);
}

#[test]
fn missing_kafka_topic_exits_1_with_its_code() {
    let broker = Broker::start(KAFKA_3);
    let dir = TempDir::new().unwrap();
    let uri = format!("kafka://{}/cli-missing-topic", broker.bootstrap());
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        "gen:rows=1000",
        "--sink-uri",
        &uri,
        "--json",
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CDC:ErrKafkaTopicNotExists"), "{stderr}");
    assert!(stderr.contains("cli-missing-topic"), "{stderr}");
    let hb: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hb["error"]["code"], "CDC:ErrKafkaTopicNotExists");
}

/// Starts `changefeed` with piped stderr; returns it and a channel of its stderr lines.
fn spawn_watched(cmd: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start changefeed");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Waits for a stderr line containing `needle`; the lines seen so far.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return;
            }
        }
    }
    panic!("no line with {needle:?} within 60 s:\n{}", seen.join("\n"));
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn ctrl_c_flushes_and_prints_the_final_checkpoint() {
    let dir = TempDir::new().unwrap();
    let (mut child, lines) = spawn_watched(changefeed(dir.path()).args([
        "run",
        "--source",
        "gen:rows=100000000,rate=20000",
        "--sink-uri",
        "file:out.jsonl",
    ]));
    let mut seen = Vec::new();
    wait_for_line(&lines, "progress: ", &mut seen);
    interrupt(&child);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    seen.extend(lines.iter());
    let stderr = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("stop requested: stopping the source"),
        "{stderr}"
    );
    let rows = summary_rows(&stderr, "interrupted");
    assert!(rows > 0 && rows < 800_000_000, "{stderr}");
    assert_eq!(
        count_lines(&dir.path().join("out.jsonl")) as u64,
        rows,
        "every row sent was flushed"
    );
    // Each table ended on a watermark at its last row: the checkpoint is a real commit
    // ts, shown with its time.
    let checkpoint = summary_checkpoint(&stderr);
    assert!(checkpoint > 0, "{stderr}");
    assert!(
        stderr.contains(&format!("checkpoint {checkpoint} (20")),
        "{stderr}"
    );
}

#[test]
fn a_second_ctrl_c_aborts_with_130() {
    let dir = TempDir::new().unwrap();
    // A sink that never starts: opening a FIFO for writing blocks until a reader comes.
    let status = Command::new("mkfifo")
        .arg(dir.path().join("fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    let (mut child, lines) = spawn_watched(changefeed(dir.path()).args([
        "run",
        "--source",
        "gen:rows=100000000",
        "--sink-uri",
        "file:fifo",
    ]));
    let mut seen = Vec::new();
    wait_for_line(&lines, "progress: ", &mut seen);
    interrupt(&child);
    wait_for_line(&lines, "stop requested: stopping the source", &mut seen);
    interrupt(&child);
    let status = wait_bounded(&mut child, Duration::from_secs(10));
    seen.extend(lines.iter());
    assert_eq!(status.code(), Some(130), "{}", seen.join("\n"));
    assert!(seen.iter().any(|l| l.contains("aborting without flushing")));
}

#[test]
fn supervise_restarts_from_the_checkpoint_until_done() {
    let dir = TempDir::new().unwrap();
    // Each attempt gets a fresh memory sink that fails once it holds 2,500 messages:
    // 6,000 rows take three attempts, each resuming where the last was acknowledged.
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        "gen:tables=2,rows=3000,rate=20000",
        "--sink-uri",
        "memory://?capacity=2500",
        "--supervise",
        "--backoff-initial",
        "50ms",
        "--backoff-max",
        "200ms",
    ]));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("attempt 1 failed: CDC:ErrSinkFull"),
        "{stderr}"
    );
    assert!(stderr.contains("restarting from checkpoint"), "{stderr}");
    let rows = summary_rows(&stderr, "done");
    assert!(
        (6000..6000 + 3 * 1024).contains(&rows),
        "every row, few twice: {stderr}"
    );
}

#[test]
fn supervise_gives_up_on_an_error_not_worth_a_restart() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.path().join("bad.jsonl"), "{\"op\":\"merge\"}\n").unwrap();
    let out = run(changefeed(dir.path()).args([
        "run",
        "--source",
        "file:bad.jsonl",
        "--supervise",
        "--json",
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 1: unknown variant `merge`"),
        "{stderr}"
    );
    let hb: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hb["error"]["code"], "CDC:ErrInvalidConfig");
}
