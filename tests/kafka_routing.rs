//! Routing on a real Kafka 3.9 broker (issue 3, test 6): every topic expression and
//! partition rule puts rows where `src/sink/kafka/router.rs` and docs/ENCODINGS.md say.
//!
//! One broker serves three scenarios, each its own changefeed:
//!
//! * **topic rules** (canal-json): `{schema}` / `{table}` expansion, prefix, middle and
//!   suffix, sanitising (`my table` → `my_table`, `dé/1` → `d__1`), first rule wins
//!   (decoy topics exist for the rules that must *not* be used), case-sensitive matchers,
//!   unmatched tables → the default topic. Every topic is read back in full: exactly the
//!   expected rows, each once, and nothing else.
//! * **partition rules** on a 5-partition topic: `Table` (also the default for tables no
//!   rule matches), `IndexValue` (single, composite, every value variant, keyless, key
//!   changed by an update, delete), `Ts`, `Columns(["region"])` (with NULL and a missing
//!   column), first rule wins. Each message's partition is checked against the hash the
//!   router docs define, recomputed here byte by byte with `crc32fast::hash`.
//! * **the docs' worked example**: one row, four rules, four 4-partition topics:
//!   partitions 2, 3, 1 and 0, the figures of the docs' table.
//! * **DDL placement**: canal-json DDL in partition 0 of the table's (routed) topic only;
//!   debezium DDL once in every partition; in each partition the table's earlier rows
//!   have lower offsets than the DDL and its later rows higher ones.
//!
//! The scenarios run one after another and a failing one does not stop the others: the
//! test panics at the end listing every failure.

#[path = "support/kafka.rs"]
mod kafka_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use changefeed::sink::kafka::{KafkaSink, KafkaSinkConfig, PartitionRule, Protocol};
use changefeed::{
    Column, DdlChange, DispatcherManager, Event, RowChange, RowKind, TableName, Value,
};
use kafka_support::{read_all, Broker, ConsumedMessage, KAFKA_3};

/// Partitions of the partition-rule topic: not a power of two, so `hash % n` differs
/// from any bit mask.
const PARTITIONS: u32 = 5;
/// Partitions of the DDL topics.
const DDL_PARTITIONS: u32 = 4;
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

// ----------------------------------------------------------------------------------
// The documented hash, written out independently of the router.
// ----------------------------------------------------------------------------------

/// `table-bytes = schema 0x00 table`.
fn table_bytes(t: &TableName) -> Vec<u8> {
    let mut b = t.schema().as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(t.table().as_bytes());
    b
}

/// Appends `column-bytes = 0x00 name 0x00 value-bytes`; value-bytes is
/// `Value::to_text()` as UTF-8, or the single byte 0xFF when that is `None`.
fn push_column(b: &mut Vec<u8>, name: &str, value: &Value) {
    b.push(0);
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    match value.to_text() {
        Some(text) => b.extend_from_slice(text.as_bytes()),
        None => b.push(0xFF),
    }
}

fn crc(bytes: &[u8]) -> u64 {
    u64::from(crc32fast::hash(bytes))
}

fn modulo(hash: u64, partitions: u32) -> i32 {
    (hash % u64::from(partitions)) as i32
}

/// The current image: the row after the change, or before it for a delete.
fn current_image(row: &RowChange) -> &[Column] {
    if row.kind == RowKind::Delete {
        &row.old
    } else {
        &row.new
    }
}

/// `Table`: crc32(table-bytes).
fn table_hash(t: &TableName) -> u64 {
    crc(&table_bytes(t))
}

/// `IndexValue`: crc32(table-bytes column-bytes…) over the key columns of the current
/// image (the new one, the old one for a delete), in column order; like `Table`
/// without key columns.
fn index_value_hash(row: &RowChange) -> u64 {
    let mut b = table_bytes(&row.table);
    let image = current_image(row);
    for c in image.iter().filter(|c| c.is_key) {
        push_column(&mut b, &c.name, &c.value);
    }
    crc(&b)
}

/// `Columns(names)`: crc32(table-bytes column-bytes…), one per name in order, a missing
/// column counting as NULL.
fn columns_hash(row: &RowChange, names: &[&str]) -> u64 {
    let mut b = table_bytes(&row.table);
    let image = current_image(row);
    for name in names {
        let value = image
            .iter()
            .find(|c| c.name == *name)
            .map(|c| c.value.clone())
            .unwrap_or(Value::Null);
        push_column(&mut b, name, &value);
    }
    crc(&b)
}

// ----------------------------------------------------------------------------------
// Feeding a changefeed and reading topics back.
// ----------------------------------------------------------------------------------

/// Every row carries a unique non-key `seq` column: that is how a message read back is
/// matched to the row sent.
fn seq_col(seq: u64) -> Column {
    Column::new("seq", Value::UInt(seq))
}

/// The events of each table, in commit-ts order, sent by one thread per table; then
/// flush and close, both of which must succeed.
fn feed(name: &str, config: KafkaSinkConfig, plan: &[(TableName, Vec<Event>)]) {
    let manager = DispatcherManager::builder(name.to_string())
        .start(KafkaSink::new(config).expect("a valid kafka config"))
        .unwrap_or_else(|e| panic!("{name}: start: {e}"));
    let dispatchers: Vec<_> = plan
        .iter()
        .map(|(t, _)| manager.add_dispatcher(t.clone()).unwrap())
        .collect();
    std::thread::scope(|s| {
        for (d, (_, events)) in dispatchers.iter().zip(plan) {
            s.spawn(move || {
                for e in events {
                    d.send(e.clone())
                        .unwrap_or_else(|e| panic!("{name}: send: {}", e.cause));
                }
            });
        }
    });
    manager
        .flush(FLUSH_TIMEOUT)
        .unwrap_or_else(|e| panic!("{name}: flush: {e}"));
    manager
        .close()
        .unwrap_or_else(|e| panic!("{name}: close: {e}"));
}

/// What a message read back says, for either protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Parsed {
    Row {
        schema: String,
        table: String,
        seq: u64,
        ts: u64,
    },
    Ddl {
        schema: String,
        table: String,
        sql: String,
        ts: u64,
    },
}

impl Parsed {
    fn ts(&self) -> u64 {
        match self {
            Parsed::Row { ts, .. } | Parsed::Ddl { ts, .. } => *ts,
        }
    }
}

fn parse(protocol: Protocol, m: &ConsumedMessage) -> Parsed {
    let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap_or_else(|e| {
        panic!(
            "partition {} offset {}: not JSON ({e}): {}",
            m.partition,
            m.offset,
            String::from_utf8_lossy(&m.value)
        )
    });
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_else(|| panic!("{v}")).to_string();
    match protocol {
        Protocol::CanalJson => {
            let schema = text(&v["database"]);
            let table = text(&v["table"]);
            let ts = v["_tidb"]["commitTs"].as_u64().expect("commitTs");
            if v["isDdl"].as_bool().expect("isDdl") {
                Parsed::Ddl {
                    schema,
                    table,
                    sql: text(&v["sql"]),
                    ts,
                }
            } else {
                let seq = text(&v["data"][0]["seq"]).parse().expect("seq");
                Parsed::Row {
                    schema,
                    table,
                    seq,
                    ts,
                }
            }
        }
        Protocol::Debezium => {
            let schema = text(&v["source"]["db"]);
            let table = text(&v["source"]["table"]);
            let ts = v["source"]["commit_ts"].as_u64().expect("commit_ts");
            if v.get("ddl").is_some() {
                assert!(v.get("op").is_none(), "a DDL message has no op: {v}");
                Parsed::Ddl {
                    schema,
                    table,
                    sql: text(&v["ddl"]),
                    ts,
                }
            } else {
                let image = if v["after"].is_null() {
                    &v["before"]
                } else {
                    &v["after"]
                };
                let seq = image["seq"].as_u64().expect("seq");
                Parsed::Row {
                    schema,
                    table,
                    seq,
                    ts,
                }
            }
        }
    }
}

/// Every message of `topic` (at least `expected` are awaited), parsed, with partition
/// and offset.
fn read_topic(
    broker: &Broker,
    protocol: Protocol,
    topic: &str,
    expected: usize,
) -> Vec<(i32, i64, Parsed)> {
    read_all(&broker.bootstrap(), topic, expected, READ_TIMEOUT)
        .iter()
        .map(|m| (m.partition, m.offset, parse(protocol, m)))
        .collect()
}

fn row(table: &TableName, ts: u64, seq: u64, mut cols: Vec<Column>) -> Event {
    cols.push(seq_col(seq));
    Event::Row(RowChange::insert(table.clone(), ts, cols))
}

// ----------------------------------------------------------------------------------
// Scenario 1: topic rules.
// ----------------------------------------------------------------------------------

const TR_DEFAULT: &str = "tr-default";
const TR_ROWS: u64 = 20;

/// (schema, table, the topic the docs say it goes to).
const TR_TABLES: &[(&str, &str, &str)] = &[
    // Rule 2, `cdc_{schema}_{table}`.
    ("shop", "orders", "cdc_shop_orders"),
    // Sanitised: ' ' → '_'.
    ("shop", "my table", "cdc_shop_my_table"),
    // Rule 1 (`shop.vip_?`) comes first: not cdc_shop_vip_1.
    ("shop", "vip_1", "vip-shop"),
    // `?` is one character: rule 1 does not match, rule 2 does.
    ("shop", "vip_10", "cdc_shop_vip_10"),
    // Rule 3, `audit-{schema}` (no {table}): both tables share one topic; rule 4
    // (`audit.logins`) comes later and is never used.
    ("audit", "logins", "audit-audit"),
    ("audit", "payments", "audit-audit"),
    // Rule 5: prefix, middle and suffix; one '_' per character ('é' and '/').
    ("intl", "dé/1", "intl.intl.d__1.v1"),
    // No rule matches: the default topic.
    ("other", "things", TR_DEFAULT),
    // Matchers are case-sensitive: `shop.*` does not match `SHOP`.
    ("SHOP", "orders", TR_DEFAULT),
];

/// Topics that exist but must stay empty: where a wrong rule would send rows.
const TR_DECOYS: &[&str] = &["cdc_shop_vip_1", "shadowed_audit_logins", "cdc_SHOP_orders"];

fn tr_topics() -> Vec<(&'static str, u32)> {
    let mut topics: Vec<(&str, u32)> = TR_TABLES
        .iter()
        .map(|&(_, _, topic)| (topic, if topic == TR_DEFAULT { 2 } else { 1 }))
        .collect();
    topics.extend(TR_DECOYS.iter().map(|&t| (t, 1)));
    topics.sort();
    topics.dedup();
    topics
}

fn topic_rules(broker: &Broker) {
    let config = KafkaSinkConfig::new([broker.bootstrap()], TR_DEFAULT)
        .unwrap()
        .topic_rule("shop.vip_?", "vip-{schema}")
        .unwrap()
        .topic_rule("shop.*", "cdc_{schema}_{table}")
        .unwrap()
        .topic_rule("audit.*", "audit-{schema}")
        .unwrap()
        .topic_rule("audit.logins", "shadowed_{schema}_{table}")
        .unwrap()
        .topic_rule("intl.*", "intl.{schema}.{table}.v1")
        .unwrap();
    // Which (schema, table, seq) each topic must hold.
    let mut expected: BTreeMap<&str, BTreeSet<(String, String, u64)>> = BTreeMap::new();
    let mut plan = Vec::new();
    let mut seq = 0;
    for &(schema, table, topic) in TR_TABLES {
        let t = TableName::new(schema, table);
        let mut events = Vec::new();
        for i in 1..=TR_ROWS {
            seq += 1;
            events.push(row(
                &t,
                100 + i,
                seq,
                vec![Column::key("id", Value::UInt(i))],
            ));
            expected
                .entry(topic)
                .or_default()
                .insert((schema.into(), table.into(), seq));
        }
        plan.push((t, events));
    }
    feed("topic-rules", config, &plan);

    for (topic, rows) in &expected {
        let got = read_topic(broker, Protocol::CanalJson, topic, rows.len());
        let mut seen = BTreeSet::new();
        for (p, o, m) in &got {
            let Parsed::Row {
                schema, table, seq, ..
            } = m
            else {
                panic!("{topic} {p}/{o}: unexpected {m:?}");
            };
            let key = (schema.clone(), table.clone(), *seq);
            assert!(
                rows.contains(&key),
                "{topic} {p}/{o}: row {key:?} does not belong in this topic"
            );
            assert!(seen.insert(key.clone()), "{topic}: row {key:?} twice");
        }
        assert_eq!(
            &seen,
            rows,
            "{topic}: missing rows {:?}",
            rows.difference(&seen).collect::<Vec<_>>()
        );
        println!("topic rules: {topic}: {} rows, as expected", got.len());
    }
    for topic in TR_DECOYS {
        let got = read_topic(broker, Protocol::CanalJson, topic, 0);
        assert!(
            got.is_empty(),
            "decoy topic {topic} must stay empty, holds {} messages, first {:?}",
            got.len(),
            got.first()
        );
    }
}

// ----------------------------------------------------------------------------------
// Scenario 2: partition rules.
// ----------------------------------------------------------------------------------

const PR_TOPIC: &str = "pr-rows";

/// Adds the row with its expected partition to the plan.
struct Plan {
    seq: u64,
    tables: Vec<(TableName, Vec<Event>)>,
    /// seq → (table, expected partition, what rule/why, for messages).
    expected: HashMap<u64, (String, i32, String)>,
}

impl Plan {
    fn table(&mut self, t: &TableName) -> usize {
        match self.tables.iter().position(|(x, _)| x == t) {
            Some(i) => i,
            None => {
                self.tables.push((t.clone(), Vec::new()));
                self.tables.len() - 1
            }
        }
    }

    /// Adds `row` (its `seq` column is appended here) expected in `partition`.
    fn add(&mut self, mut row: RowChange, expect: impl Fn(&RowChange) -> (u64, &'static str)) {
        self.seq += 1;
        let seq = self.seq;
        if !row.new.is_empty() {
            row.new.push(seq_col(seq));
        }
        if !row.old.is_empty() {
            row.old.push(seq_col(seq));
        }
        let (hash, rule) = expect(&row);
        let i = self.table(&row.table);
        self.expected.insert(
            seq,
            (
                row.table.to_string(),
                modulo(hash, PARTITIONS),
                format!("{rule}, hash {hash}"),
            ),
        );
        self.tables[i].1.push(Event::Row(row));
    }
}

fn by_table(r: &RowChange) -> (u64, &'static str) {
    (table_hash(&r.table), "Table")
}
fn by_index(r: &RowChange) -> (u64, &'static str) {
    (index_value_hash(r), "IndexValue")
}
fn by_ts(r: &RowChange) -> (u64, &'static str) {
    (r.commit_ts, "Ts")
}
fn by_region(r: &RowChange) -> (u64, &'static str) {
    (columns_hash(r, &["region"]), "Columns([region])")
}

fn partition_rules(broker: &Broker) {
    let config = KafkaSinkConfig::new([broker.bootstrap()], PR_TOPIC)
        .unwrap()
        .partition_rule("ptable.*", PartitionRule::Table)
        .unwrap()
        // First rule wins: pindex.by_ts is partitioned by ts, not by its key.
        .partition_rule("pindex.by_ts", PartitionRule::Ts)
        .unwrap()
        .partition_rule("pindex.*", PartitionRule::IndexValue)
        .unwrap()
        .partition_rule("pts.*", PartitionRule::Ts)
        .unwrap()
        .partition_rule("pcols.*", PartitionRule::Columns(vec!["region".into()]))
        .unwrap();
    let mut plan = Plan {
        seq: 0,
        tables: Vec::new(),
        expected: HashMap::new(),
    };

    // Table: every row of a table in crc32(schema\0table) % 5. These four tables land in
    // partitions 0, 4, 2 and 1; `pdefault.t`, matched by no rule, uses Table too (1).
    let table_tables: Vec<TableName> = ["a", "c", "d", "orders"]
        .iter()
        .map(|t| TableName::new("ptable", *t))
        .collect();
    let distinct: BTreeSet<i32> = table_tables
        .iter()
        .map(|t| modulo(table_hash(t), PARTITIONS))
        .collect();
    assert!(
        distinct.len() >= 3,
        "test design: Table tables should spread, got {distinct:?}"
    );
    for t in table_tables
        .iter()
        .chain([&TableName::new("pdefault", "t")])
    {
        for id in 1..=25u64 {
            plan.add(
                RowChange::insert(
                    t.clone(),
                    100 + id,
                    vec![Column::key("id", Value::UInt(id))],
                ),
                by_table,
            );
        }
    }

    // IndexValue, single key: inserts, updates of the same keys, deletes, and an update
    // that changes the key (the new key decides).
    let orders = TableName::new("pindex", "orders");
    let cols = |id: i64, qty: i64| {
        vec![
            Column::key("id", Value::Int(id)),
            Column::new("qty", Value::Int(qty)),
        ]
    };
    for id in 1..=60 {
        plan.add(
            RowChange::insert(orders.clone(), 100, cols(id, 1)),
            by_index,
        );
    }
    for id in 1..=20 {
        plan.add(
            RowChange::update(orders.clone(), 200, cols(id, 1), cols(id, 2)),
            by_index,
        );
    }
    for id in 21..=30 {
        plan.add(
            RowChange::delete(orders.clone(), 300, cols(id, 1)),
            by_index,
        );
    }
    for id in 31..=35 {
        plan.add(
            RowChange::update(orders.clone(), 400, cols(id, 1), cols(id + 1000, 1)),
            by_index,
        );
    }
    // Composite key (a, b) with a non-key column between them, in column order.
    let pairs = TableName::new("pindex", "pairs");
    for (i, b) in ["x", "héllo", "", "a b", "x"].iter().enumerate() {
        for a in [1i64, -7, 1 << 40] {
            plan.add(
                RowChange::insert(
                    pairs.clone(),
                    100 + i as u64,
                    vec![
                        Column::key("a", Value::Int(a)),
                        Column::new("filler", Value::Text("zzz".into())),
                        Column::key("b", Value::Text(b.to_string())),
                    ],
                ),
                by_index,
            );
        }
    }
    // Every value variant as a key: its text, or 0xFF for NULL / NaN / infinity.
    let typed = TableName::new("pindex", "typed");
    let values = [
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(-3),
        Value::UInt(u64::MAX),
        Value::Float(1.5),
        Value::Float(0.001),
        Value::Float(f64::NAN),
        Value::Float(f64::INFINITY),
        Value::Decimal("12.50".into()),
        Value::Text("héllo wörld".into()),
        Value::Bytes(vec![0, 255, 1]),
        Value::Json("{\"a\":1}".into()),
    ];
    for v in values {
        plan.add(
            RowChange::insert(typed.clone(), 100, vec![Column::key("k", v)]),
            by_index,
        );
    }
    // No key columns: like Table.
    let nokey = TableName::new("pindex", "nokey");
    for i in 1..=10 {
        plan.add(
            RowChange::insert(nokey.clone(), 100, vec![Column::new("v", Value::Int(i))]),
            |r| (table_hash(&r.table), "IndexValue without key = Table"),
        );
    }
    // pindex.by_ts: the earlier Ts rule wins over `pindex.*`.
    let by_ts_table = TableName::new("pindex", "by_ts");
    for i in 0..20u64 {
        plan.add(
            RowChange::insert(
                by_ts_table.clone(),
                1000 + i,
                vec![Column::key("id", Value::UInt(7))],
            ),
            by_ts,
        );
    }

    // Ts: commit_ts % 5; three rows per transaction, plus TSO-sized values.
    let events = TableName::new("pts", "events");
    for tx in 0..20u64 {
        for id in 0..3 {
            plan.add(
                RowChange::insert(
                    events.clone(),
                    1000 + tx,
                    vec![Column::key("id", Value::UInt(tx * 3 + id))],
                ),
                by_ts,
            );
        }
    }
    for (i, ts) in [
        435_000_000_000_000_000u64,
        435_000_000_000_000_001,
        462_455_508_073_971_717,
    ]
    .into_iter()
    .enumerate()
    {
        plan.add(
            RowChange::insert(
                events.clone(),
                ts,
                vec![Column::key("id", Value::UInt(1000 + i as u64))],
            ),
            by_ts,
        );
    }

    // Columns(["region"]): only region counts; NULL and a missing column hash alike.
    let corders = TableName::new("pcols", "orders");
    let regions = [
        Some(Value::Text("eu".into())),
        Some(Value::Text("us".into())),
        Some(Value::Text("apac".into())),
        Some(Value::Text("latam".into())),
        Some(Value::Text("mea".into())),
        Some(Value::Text(String::new())),
        Some(Value::Null),
        None,
    ];
    for id in 0..48i64 {
        let mut cols = vec![Column::key("id", Value::Int(id))];
        if let Some(region) = &regions[id as usize % regions.len()] {
            cols.push(Column::new("region", region.clone()));
        }
        cols.push(Column::new("qty", Value::Int(id * 10)));
        plan.add(RowChange::insert(corders.clone(), 100, cols), by_region);
    }

    let total = plan.expected.len();
    feed("partition-rules", config, &plan.tables);
    let got = read_topic(broker, Protocol::CanalJson, PR_TOPIC, total);

    let mut seen: HashMap<u64, i32> = HashMap::new();
    let mut wrong = Vec::new();
    for (p, o, m) in &got {
        let Parsed::Row {
            schema, table, seq, ..
        } = m
        else {
            panic!("{PR_TOPIC} {p}/{o}: unexpected {m:?}");
        };
        let (t, partition, why) = plan
            .expected
            .get(seq)
            .unwrap_or_else(|| panic!("{PR_TOPIC} {p}/{o}: unknown row {m:?}"));
        assert_eq!(&format!("{schema}.{table}"), t, "seq {seq}");
        if p != partition {
            wrong.push(format!(
                "{t} seq {seq}: partition {p}, expected {partition} ({why})"
            ));
        }
        assert!(seen.insert(*seq, *p).is_none(), "seq {seq} read twice");
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows in the wrong partition:\n{}",
        wrong.len(),
        got.len(),
        wrong.join("\n")
    );
    assert_eq!(seen.len(), total, "every row read back once");

    // The properties the docs promise, stated directly too.
    let partitions_of = |t: &TableName| -> BTreeSet<i32> {
        plan.expected
            .iter()
            .filter(|(_, (name, _, _))| *name == t.to_string())
            .map(|(seq, _)| seen[seq])
            .collect()
    };
    for t in &table_tables {
        assert_eq!(partitions_of(t).len(), 1, "Table: all rows of {t} in one");
    }
    assert_eq!(
        partitions_of(&nokey).len(),
        1,
        "IndexValue without key: one partition"
    );
    assert!(
        partitions_of(&orders).len() == PARTITIONS as usize,
        "IndexValue spreads a table over every partition: {:?}",
        partitions_of(&orders)
    );
    // Same key → same partition: insert, update and delete of one id.
    let mut per_id: HashMap<String, BTreeSet<i32>> = HashMap::new();
    for (_, events) in plan.tables.iter().filter(|(t, _)| *t == orders) {
        for e in events {
            let Event::Row(r) = e else { continue };
            let image = current_image(r);
            let id = image[0].value.to_text().unwrap();
            let seq = match image.last().unwrap().value {
                Value::UInt(s) => s,
                _ => unreachable!(),
            };
            per_id.entry(id).or_default().insert(seen[&seq]);
        }
    }
    assert!(
        per_id.values().all(|ps| ps.len() == 1),
        "IndexValue: same key, same partition: {per_id:?}"
    );
    let spread: BTreeMap<i32, usize> = seen.values().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(*p).or_default() += 1;
        m
    });
    println!(
        "partition rules: {} rows, every one in its documented partition; per partition {spread:?}",
        got.len()
    );
}

/// The worked example of the router docs, end to end: a row of `shop.orders` (key `id`
/// = 42, `region` = "eu", commit ts 435000000000000000) into a 4-partition topic lands
/// in partition 2 (Table), 3 (IndexValue), 1 (Columns(["region", "id"])) and 0 (Ts):
/// the figures are the docs' table, not recomputed.
const WORKED: &[(&str, u64, i32)] = &[
    ("we-table", 3_037_741_618, 2),
    ("we-index", 441_757_783, 3),
    ("we-columns", 1_038_972_649, 1),
    ("we-ts", 435_000_000_000_000_000, 0),
];

fn worked_example(broker: &Broker) {
    let t = TableName::new("shop", "orders");
    let ts = 435_000_000_000_000_000;
    let the_row = RowChange::insert(
        t.clone(),
        ts,
        vec![
            Column::key("id", Value::Int(42)),
            Column::new("region", Value::Text("eu".into())),
        ],
    );
    // The docs' hashes, from the definition written out above.
    assert_eq!(table_hash(&t), WORKED[0].1);
    assert_eq!(index_value_hash(&the_row), WORKED[1].1);
    assert_eq!(columns_hash(&the_row, &["region", "id"]), WORKED[2].1);
    for &(topic, _, partition) in WORKED {
        let rule = match topic {
            "we-table" => PartitionRule::Table,
            "we-index" => PartitionRule::IndexValue,
            "we-columns" => PartitionRule::Columns(vec!["region".into(), "id".into()]),
            _ => PartitionRule::Ts,
        };
        let config = KafkaSinkConfig::new([broker.bootstrap()], topic)
            .unwrap()
            .partition_rule("shop.*", rule.clone())
            .unwrap();
        let mut r = the_row.clone();
        r.new.push(seq_col(1));
        feed(topic, config, &[(t.clone(), vec![Event::Row(r)])]);
        let got = read_topic(broker, Protocol::CanalJson, topic, 1);
        let places: Vec<i32> = got.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(
            places,
            vec![partition],
            "{rule:?}: the docs' worked example"
        );
    }
    println!("worked example: partitions 2 / 3 / 1 / 0 as the docs' table says");
}

// ----------------------------------------------------------------------------------
// Scenario 3: DDL placement.
// ----------------------------------------------------------------------------------

const DDL_ROWS: u64 = 40;
/// Commit ts of the two DDLs; rows come before, between and after them.
const DDL_TS: [u64; 2] = [1_000, 2_000];

/// Rows (IndexValue, so spread over every partition), a DDL, more rows, a DDL, more rows.
fn ddl_plan(t: &TableName) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut seq = 0;
    for (phase, base) in [0u64, DDL_TS[0], DDL_TS[1]].into_iter().enumerate() {
        for i in 1..=DDL_ROWS {
            seq += 1;
            events.push(row(
                t,
                base + 100 + i,
                seq,
                vec![
                    Column::key("id", Value::UInt(phase as u64 * 1000 + i)),
                    Column::new("v", Value::Text(format!("phase {phase}"))),
                ],
            ));
        }
        if let Some(ts) = DDL_TS.get(phase) {
            events.push(Event::Ddl(DdlChange::new(
                t.clone(),
                *ts,
                format!("ALTER TABLE `{}` ADD COLUMN `c{phase}` INT", t.table()),
            )));
        }
    }
    (events, seq as usize)
}

/// Checks, per partition, that the messages of the table come in commit-ts order and
/// that every row committed before a DDL sits at a lower offset than the DDL, every
/// row after it at a higher one.
fn check_ddl_order(topic: &str, got: &[(i32, i64, Parsed)]) {
    let mut per_partition: BTreeMap<i32, Vec<(i64, &Parsed)>> = BTreeMap::new();
    for (p, o, m) in got {
        per_partition.entry(*p).or_default().push((*o, m));
    }
    for (p, msgs) in &per_partition {
        // read_all sorts by (partition, offset).
        for w in msgs.windows(2) {
            assert!(
                w[0].1.ts() <= w[1].1.ts(),
                "{topic} partition {p}: offset {} (ts {}) before offset {} (ts {})",
                w[0].0,
                w[0].1.ts(),
                w[1].0,
                w[1].1.ts()
            );
        }
        for (ddl_offset, ddl) in msgs.iter().filter(|(_, m)| matches!(m, Parsed::Ddl { .. })) {
            for (o, m) in msgs.iter().filter(|(_, m)| matches!(m, Parsed::Row { .. })) {
                if m.ts() < ddl.ts() {
                    assert!(
                        o < ddl_offset,
                        "{topic} partition {p}: earlier row {m:?} at offset {o} after the DDL at {ddl_offset}"
                    );
                } else {
                    assert!(
                        o > ddl_offset,
                        "{topic} partition {p}: later row {m:?} at offset {o} before the DDL at {ddl_offset}"
                    );
                }
            }
        }
    }
}

fn ddl_placement(broker: &Broker, protocol: Protocol) {
    let (schema, default) = match protocol {
        Protocol::CanalJson => ("ddlc", "ddl-default-c"),
        Protocol::Debezium => ("ddld", "ddl-default-d"),
    };
    let t = TableName::new(schema, "t");
    let topic = format!("ddl_{schema}_t");
    // The DDL follows the table's topic rule, like its rows; the default topic stays
    // empty.
    let config = KafkaSinkConfig::new([broker.bootstrap()], default)
        .unwrap()
        .protocol(protocol)
        .topic_rule(&format!("{schema}.*"), "ddl_{schema}_{table}")
        .unwrap()
        .partition_rule("*.*", PartitionRule::IndexValue)
        .unwrap();
    let (events, rows) = ddl_plan(&t);
    feed(&format!("ddl-{schema}"), config, &[(t.clone(), events)]);

    let ddl_copies = match protocol {
        Protocol::CanalJson => 1,
        Protocol::Debezium => DDL_PARTITIONS as usize,
    };
    let expected = rows + DDL_TS.len() * ddl_copies;
    let got = read_topic(broker, protocol, &topic, expected);
    assert_eq!(
        got.len(),
        expected,
        "{topic}: {rows} rows + {} DDL messages",
        DDL_TS.len() * ddl_copies
    );
    let row_partitions: BTreeSet<i32> = got
        .iter()
        .filter(|(_, _, m)| matches!(m, Parsed::Row { .. }))
        .map(|(p, _, _)| *p)
        .collect();
    assert_eq!(
        row_partitions.len(),
        DDL_PARTITIONS as usize,
        "test design: rows in every partition"
    );
    for (i, ts) in DDL_TS.iter().enumerate() {
        let places: Vec<i32> = got
            .iter()
            .filter(|(_, _, m)| matches!(m, Parsed::Ddl { ts: x, .. } if x == ts))
            .map(|(p, _, _)| *p)
            .collect();
        let want: Vec<i32> = match protocol {
            Protocol::CanalJson => vec![0],
            Protocol::Debezium => (0..DDL_PARTITIONS as i32).collect(),
        };
        assert_eq!(places, want, "{topic}: DDL {i} (ts {ts}) partitions");
        for (_, _, m) in got
            .iter()
            .filter(|(_, _, m)| matches!(m, Parsed::Ddl { ts: x, .. } if x == ts))
        {
            let Parsed::Ddl {
                schema: s,
                table,
                sql,
                ..
            } = m
            else {
                unreachable!()
            };
            assert_eq!((s.as_str(), table.as_str()), (schema, "t"));
            assert!(sql.contains(&format!("`c{i}`")), "{sql}");
        }
    }
    let seqs: BTreeSet<u64> = got
        .iter()
        .filter_map(|(_, _, m)| match m {
            Parsed::Row { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs.len(), rows, "{topic}: every row once");
    check_ddl_order(&topic, &got);
    let in_default = read_topic(broker, protocol, default, 0);
    assert!(in_default.is_empty(), "{default}: {in_default:?}");
    println!(
        "DDL placement ({protocol:?}): {} messages in {topic}; each DDL in partitions {:?}, after the earlier rows of its partition",
        got.len(),
        match protocol {
            Protocol::CanalJson => vec![0],
            Protocol::Debezium => (0..DDL_PARTITIONS as i32).collect::<Vec<_>>(),
        }
    );
}

// ----------------------------------------------------------------------------------

#[test]
fn routing_on_a_real_broker() {
    let started = Instant::now();
    let broker = Broker::start(KAFKA_3);
    println!("broker {} up in {:?}", broker.version(), started.elapsed());

    let t = Instant::now();
    let mut topics = tr_topics();
    topics.push((PR_TOPIC, PARTITIONS));
    topics.push(("ddl_ddlc_t", DDL_PARTITIONS));
    topics.push(("ddl_ddld_t", DDL_PARTITIONS));
    topics.push(("ddl-default-c", 1));
    topics.push(("ddl-default-d", 1));
    topics.extend(WORKED.iter().map(|&(t, _, _)| (t, 4)));
    broker.create_topics(&topics);
    println!("{} topics created in {:?}", topics.len(), t.elapsed());

    type Scenario<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let scenarios: Vec<Scenario<'_>> = vec![
        ("topic rules", Box::new(|| topic_rules(&broker))),
        ("partition rules", Box::new(|| partition_rules(&broker))),
        (
            "worked example of the docs",
            Box::new(|| worked_example(&broker)),
        ),
        (
            "DDL placement, canal-json",
            Box::new(|| ddl_placement(&broker, Protocol::CanalJson)),
        ),
        (
            "DDL placement, debezium",
            Box::new(|| ddl_placement(&broker, Protocol::Debezium)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, run) in &scenarios {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(()) => println!("PASS {name} in {:?}", t.elapsed()),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("FAIL {name} in {:?}: {why}", t.elapsed());
                failures.push(format!("{name}: {why}"));
            }
        }
    }
    println!("total {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} scenario(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
