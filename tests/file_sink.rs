//! The `file:` sink and the URIs `sink::open` accepts and rejects.

mod common;

use changefeed::{sink, Column, DdlChange, DispatcherManager, RowChange, TableName, Value};
use common::*;
use crossbeam_channel::bounded;

fn run_rows(
    uri: &str,
    id: &str,
    rows: u64,
) -> (changefeed::Result<()>, Vec<changefeed::HeartBeat>) {
    let (maintainer, heartbeats) = bounded(1024);
    let manager = DispatcherManager::builder(id)
        .maintainer(maintainer)
        .start(sink::open(uri).unwrap())
        .unwrap();
    let t = TableName::new("shop", "orders");
    let d = manager.add_dispatcher(t.clone()).unwrap();
    for i in 1..=rows {
        let cols = vec![
            Column::key("id", Value::UInt(i)),
            Column::new("note", Value::Text("a\nb".into())),
        ];
        if d.send(RowChange::insert(t.clone(), 1000 + i, cols))
            .is_err()
        {
            break;
        }
    }
    let _ = d.send(DdlChange::new(
        t,
        5000,
        "ALTER TABLE orders ADD COLUMN c INT",
    ));
    let result = manager.close();
    let hbs = heartbeats_until_closed(&heartbeats);
    (result, hbs)
}

#[test]
fn writes_one_json_line_per_row_or_ddl() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let (result, hbs) = run_rows(&format!("file://{}", path.display()), "fs1", 500);
    result.unwrap();
    assert!(errors(&hbs).is_empty());
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 501, "500 rows and one DDL, nothing else");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["database"], "shop");
    }
    let last: serde_json::Value = serde_json::from_str(lines[500]).unwrap();
    assert_eq!(last["isDdl"], true);
    assert!(text.ends_with('\n'));
}

#[test]
fn relative_paths_and_debezium_work() {
    let dir = tempfile::tempdir().unwrap();
    let rel = dir
        .path()
        .strip_prefix(std::env::current_dir().unwrap())
        .map(|p| p.to_path_buf());
    // Temp dirs are rarely under the working directory; fall back to an absolute path.
    let uri = match rel {
        Ok(rel) => format!("file:{}/d.jsonl?protocol=debezium", rel.display()),
        Err(_) => format!("file://{}/d.jsonl?protocol=debezium", dir.path().display()),
    };
    let (result, _) = run_rows(&uri, "fs2", 10);
    result.unwrap();
    let text = std::fs::read_to_string(dir.path().join("d.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 11);
    assert!(text.contains("\"op\":\"c\""), "{text}");
}

#[test]
fn dev_null_works() {
    let (result, hbs) = run_rows("file:///dev/null", "fs3", 1000);
    result.unwrap();
    assert!(errors(&hbs).is_empty());
}

#[test]
fn full_disk_is_a_real_error() {
    let (maintainer, heartbeats) = bounded(1024);
    let manager = DispatcherManager::builder("fs4")
        .maintainer(maintainer)
        .start(sink::open("file:///dev/full").unwrap())
        .unwrap();
    let t = TableName::new("shop", "orders");
    let d = manager.add_dispatcher(t.clone()).unwrap();
    for i in 1.. {
        let cols = vec![Column::key("id", Value::UInt(i))];
        if d.send(RowChange::insert(t.clone(), i, cols)).is_err() {
            break;
        }
        if i == 10 {
            // Nothing is acknowledged: the first flush fails.
            assert!(manager.flush(HANG_GUARD).is_err());
        }
    }
    let e = manager.wait().unwrap_err();
    assert_eq!(e.code(), "CDC:ErrSinkIO");
    assert!(e.to_string().contains("/dev/full"), "{e}");
    let hbs = heartbeats_until_closed(&heartbeats);
    let reports = errors(&hbs);
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0].message.contains("No space left on device"),
        "{}",
        reports[0].message
    );
    assert_eq!(manager.checkpoint_ts(), 0, "nothing was acknowledged");
}

#[test]
fn memory_sink_keeps_its_capacity_then_fails() {
    let s = sink::MemorySink::new(
        5,
        std::sync::Arc::new(changefeed::codec::CanalJson::default()),
    );
    let handle = s.handle();
    let manager = DispatcherManager::builder("fs5").start(s).unwrap();
    let d = manager.add_dispatcher(table(0)).unwrap();
    for seq in 1..=5 {
        d.send(row(&table(0), seq, seq, 0)).unwrap();
    }
    manager.flush(HANG_GUARD).unwrap();
    assert_eq!(handle.len(), 5);
    d.send(row(&table(0), 6, 6, 0)).unwrap();
    let e = manager.wait().unwrap_err();
    assert_eq!(e.code(), "CDC:ErrSinkFull");
    assert!(e.to_string().contains("capacity of 5"), "{e}");
    assert_eq!(handle.len(), 5);
}

#[test]
fn open_rejects_bad_uris_naming_what_is_wrong() {
    let cases = [
        ("bogus://x", "unknown scheme \"bogus\""),
        ("nothing-here", "missing scheme"),
        ("blackhole://?speed=1", "unknown parameter \"speed\""),
        ("blackhole://host", "takes no host or path"),
        ("file://otherhost/tmp/x", "name no host"),
        ("file:", "missing file path"),
        ("file:///tmp/x?protocol=avro", "protocol=\"avro\""),
        ("file:///tmp/x?mode=truncate", "unknown parameter \"mode\""),
        ("memory://?capacity=0", "capacity=\"0\""),
        ("memory://?capacity=lots", "capacity=\"lots\""),
        ("memory://?capacity=1&capacity=2", "given twice"),
    ];
    for (uri, expected) in cases {
        let e = match sink::open(uri) {
            Ok(_) => panic!("{uri} was accepted"),
            Err(e) => e,
        };
        assert_eq!(e.code(), "CDC:ErrSinkURIInvalid", "{uri}");
        assert!(e.to_string().contains(expected), "{uri}: {e}");
    }
    for uri in [
        "blackhole://",
        "memory://",
        "memory://?capacity=3&protocol=debezium",
        "file:///tmp/x.jsonl",
        "file:x.jsonl",
    ] {
        assert!(sink::open(uri).is_ok(), "{uri}");
    }
}
