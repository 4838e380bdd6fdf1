//! Routing row and DDL events to Kafka topics and partitions.
//!
//! The sink's router is built from its default topic and two ordered lists of rules,
//! added with [`KafkaSinkConfig::topic_rule`](super::KafkaSinkConfig::topic_rule) and
//! [`KafkaSinkConfig::partition_rule`](super::KafkaSinkConfig::partition_rule); each
//! rule is a table matcher and what to do with the tables it matches:
//!
//! | list | rule | unmatched tables |
//! |---|---|---|
//! | topic rules | a topic expression: the topic is the expression expanded for the table | the default topic |
//! | partition rules | a [`PartitionRule`]: how a row picks its partition | [`PartitionRule::Table`] |
//!
//! In both lists **the first matching rule wins**; later rules are not consulted. The
//! topic applies to a table's rows and DDL events alike; the partition rule to rows
//! only (where a DDL event goes is the protocol's business, see the
//! [sink's documentation](super)). Both answers are cached per table, so the rules are
//! matched once per table, not once per row.
//!
//! # Table matchers
//!
//! A matcher is `schema.table`, split at the **first** `.`: the schema pattern cannot
//! contain a dot, the table pattern can (`db.a.b` matches table `a.b` of schema `db`).
//! Each part is a glob in which `*` matches any run of characters (also none) and `?`
//! matches exactly one character; everything else matches itself. Matching is
//! **case-sensitive** (`DB.*` does not match schema `db`). Examples: `*.*` (every
//! table), `db.*` (every table of `db`), `db.orders_?` (`orders_1`, `orders_x`, not
//! `orders_10`). A matcher with no `.`, or with an empty or whitespace-only part, is
//! rejected.
//!
//! # Topic expressions
//!
//! `[prefix]{schema}[middle][{table}][suffix]`: `{schema}` exactly once, `{table}` at
//! most once and after `{schema}`; the fixed text around them is made of
//! `[A-Za-z0-9._-]`. Expanding replaces the placeholders with the table's schema and
//! table names, every character of a *name* outside `[A-Za-z0-9._-]` replaced by `_`
//! (one `_` per character, so `my table` becomes `my_table` and `dé` becomes `d_`).
//! The result must be 1 to 249 characters and neither `.` nor `..` (Kafka's rules
//! for topic names); a table whose topic breaks them is an error when its first event
//! is routed ([`Error::KafkaInvalidConfig`], parameter `topic-rule expression`).
//! Example: `cdc_{schema}.{table}` sends `db-1.my table` to `cdc_db-1.my_table`.
//!
//! # Partition rules
//!
//! Each rule gives a [`PartitionChoice::Hash`]; the sink takes `hash % partition count`.
//!
//! | rule | TiCDC name | hash | rows that share a partition |
//! |---|---|---|---|
//! | [`PartitionRule::Table`] | `default`, `table` | CRC-32 of the table name | every row of the table |
//! | [`PartitionRule::IndexValue`] | `index-value` | CRC-32 of the table name and the key columns' values | rows with the same key |
//! | [`PartitionRule::Ts`] | `ts` | the commit ts itself | rows of the same transaction |
//! | [`PartitionRule::Columns`] | `columns` | CRC-32 of the table name and the named columns' values | rows with the same values in those columns |
//!
//! # The hash
//!
//! The hashes are part of the sink's output (consumers may rely on which partition a
//! key lands in), so they are defined byte for byte and never depend on the platform,
//! the process, or the Rust version. `crc32` is CRC-32/IEEE (the polynomial of zlib,
//! Ethernet and Go's `crc32.ChecksumIEEE`; the `crc32fast` crate), and the result is
//! `PartitionChoice::Hash(crc32(bytes) as u64)` over these bytes:
//!
//! ```text
//! table-bytes  = schema 0x00 table                       (names as UTF-8)
//! column-bytes = 0x00 name 0x00 value-bytes
//! value-bytes  = Value::to_text() as UTF-8, or the single byte 0xFF when that is None
//!                (SQL NULL, and a NaN or infinite float)
//!
//! Table        crc32(table-bytes)
//! IndexValue   crc32(table-bytes column-bytes…)   one per key column of the row's
//!              current image (RowChange::key_columns(), in column order); a row
//!              without key columns hashes like Table
//! Columns(l)   crc32(table-bytes column-bytes…)   one per name in l, in l's order;
//!              a name the current image lacks counts as NULL
//! Ts           commit_ts, not hashed: commit_ts % partition count, as TiCDC's `ts`
//! ```
//!
//! The *current image* is the row after the change, or before it for a delete
//! ([`RowChange::current`]). `0xFF` never occurs in UTF-8, so NULL differs from every
//! text, the empty text included.
//!
//! # Worked example
//!
//! A row of `shop.orders` with key column `id` = `Int(42)` and column `region` =
//! `Text("eu")`, committed at ts `435000000000000000`, to a topic of 4 partitions:
//!
//! | rule | bytes hashed | hash | partition |
//! |---|---|---|---|
//! | `Table` | `shop\0orders` | 3037741618 | 2 |
//! | `IndexValue` | `shop\0orders\0id\042` | 441757783 | 3 |
//! | `Columns(["region", "id"])` | `shop\0orders\0region\0eu\0id\042` | 1038972649 | 1 |
//! | `Ts` | — | 435000000000000000 | 0 |
//!
//! (`\0` is the byte 0x00; the unit test `worked_example_from_the_docs` pins these.)

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crc32fast::Hasher;
use parking_lot::RwLock;
use wildmatch::WildMatch;

use crate::error::Error;
use crate::event::{RowChange, TableName, Value};
use crate::message::PartitionChoice;

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// Whether `topic` is a name Kafka accepts: 1 to 249 characters of `[A-Za-z0-9._-]`,
/// neither `.` nor `..`; the error says what is wrong.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{topic:?}: a topic is 1 to 249 characters of [A-Za-z0-9._-]"
        ))
    }
}

/// How a table's rows pick a partition (TiCDC calls these partition dispatchers).
///
/// Every rule gives the row a hash, and the row goes to partition
/// `hash % partition count`. The hashes are stable across restarts, platforms and
/// versions: `crc32` below is CRC-32/IEEE (as zlib's `crc32` and Go's
/// `crc32.ChecksumIEEE`), taken over
///
/// ```text
/// table-bytes  = schema 0x00 table
/// column-bytes = 0x00 name 0x00 value-bytes
/// value-bytes  = Value::to_text() as UTF-8, or the single byte 0xFF when that is None
/// ```
///
/// For example, with 4 partitions every row of `shop.orders` goes by `Table` to
/// partition `crc32(b"shop\0orders") % 4` = `3037741618 % 4` = 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionRule {
    /// (also "default") every row of a table goes to one partition: CRC-32 of the
    /// table name, `crc32(table-bytes)`.
    Table,
    /// rows with the same key column values go to the same partition:
    /// `crc32(table-bytes column-bytes…)` with one `column-bytes` per key column of the
    /// row's current image ([`RowChange::key_columns`], in column order); a row without
    /// key columns hashes like `Table`.
    IndexValue,
    /// partition = commit ts % partition count (TiCDC's `ts`): the hash is the commit
    /// ts itself.
    Ts,
    /// hash of the named columns' values: `crc32(table-bytes column-bytes…)` with one
    /// `column-bytes` per name, in the list's order, from the row's current image
    /// ([`RowChange::current`]); a column the row lacks counts as NULL.
    Columns(Vec<String>),
}

/// Which tables a rule applies to: `schema.table`, each part a glob with `*` and `?`,
/// split at the first `.`, case-sensitive (see the [module documentation](self)).
#[derive(Clone)]
pub(crate) struct TableMatcher {
    text: Box<str>,
    schema: WildMatch,
    table: WildMatch,
}

impl TableMatcher {
    /// Parses `schema.table` (`*.*`, `db.*`, `db.orders_?`); the error says what is
    /// wrong, without naming the parameter.
    pub(crate) fn parse(s: &str) -> Result<TableMatcher, String> {
        let Some((schema, table)) = s.split_once('.') else {
            return Err(format!(
                "{s:?} is not schema.table: it has no '.' (write \"{s}.*\" for every table of a schema)"
            ));
        };
        for (what, part) in [("schema", schema), ("table", table)] {
            if part.trim().is_empty() {
                return Err(format!(
                    "{s:?}: the {what} pattern is empty; write * to match every {what}"
                ));
            }
        }
        Ok(TableMatcher {
            text: s.into(),
            schema: WildMatch::new(schema),
            table: WildMatch::new(table),
        })
    }

    /// Whether `t` is one of the tables this matcher names.
    pub(crate) fn matches(&self, t: &TableName) -> bool {
        self.schema.matches(t.schema()) && self.table.matches(t.table())
    }
}

impl fmt::Debug for TableMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TableMatcher").field(&self.text).finish()
    }
}

/// A topic name pattern: `[prefix]{schema}[middle][{table}][suffix]` (see the
/// [module documentation](self)).
#[derive(Clone)]
pub(crate) struct TopicExpr {
    text: Box<str>,
    /// Fixed text before `{schema}`.
    prefix: Box<str>,
    /// Fixed text after `{schema}`: up to `{table}`, or to the end without it.
    middle: Box<str>,
    /// Whether `{table}` follows `middle`.
    with_table: bool,
    /// Fixed text after `{table}` (empty without it).
    suffix: Box<str>,
}

/// One piece of a topic expression.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Piece {
    Fixed(char),
    Schema,
    Table,
}

const SCHEMA: &str = "{schema}";
const TABLE: &str = "{table}";

/// Whether `c` may appear in a Kafka topic name.
fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Appends `name` to `out`, each character outside `[A-Za-z0-9._-]` replaced by `_`.
fn push_sanitized(out: &mut String, name: &str) {
    out.extend(name.chars().map(|c| if is_topic_char(c) { c } else { '_' }));
}

impl TopicExpr {
    /// Parses `[prefix]{schema}[middle][{table}][suffix]`; the error says what is
    /// wrong, without naming the parameter.
    pub(crate) fn parse(s: &str) -> Result<TopicExpr, String> {
        let mut pieces = Vec::with_capacity(s.len());
        let mut rest = s;
        let mut index = 0;
        while let Some(c) = rest.chars().next() {
            let (piece, len) = if rest.starts_with(SCHEMA) {
                (Piece::Schema, SCHEMA.len())
            } else if rest.starts_with(TABLE) {
                (Piece::Table, TABLE.len())
            } else if is_topic_char(c) {
                (Piece::Fixed(c), c.len_utf8())
            } else {
                return Err(format!(
                    "{s:?}: character {c:?} at index {index} is not allowed; the fixed text is made of [A-Za-z0-9._-] and the placeholders are {{schema}} and {{table}}"
                ));
            };
            pieces.push(piece);
            rest = &rest[len..];
            index += len;
        }
        let count = |p: Piece| pieces.iter().filter(|&&q| q == p).count();
        let position = |p: Piece| pieces.iter().position(|&q| q == p);
        match count(Piece::Schema) {
            0 => {
                return Err(format!(
                    "{s:?} has no {{schema}}; the expression is [prefix]{{schema}}[middle][{{table}}][suffix]"
                ))
            }
            1 => {}
            n => return Err(format!("{s:?} has {{schema}} {n} times; write it once")),
        }
        match count(Piece::Table) {
            0 | 1 => {}
            n => {
                return Err(format!(
                    "{s:?} has {{table}} {n} times; write it at most once"
                ))
            }
        }
        if let (Some(table), Some(schema)) = (position(Piece::Table), position(Piece::Schema)) {
            if table < schema {
                return Err(format!(
                "{s:?}: {{table}} comes before {{schema}}; the expression is [prefix]{{schema}}[middle][{{table}}][suffix]"
                ));
            }
        }
        let mut fixed = [String::new(), String::new(), String::new()];
        let mut slot = 0;
        for piece in pieces {
            match piece {
                Piece::Fixed(c) => fixed[slot].push(c),
                Piece::Schema | Piece::Table => slot += 1,
            }
        }
        let with_table = slot == 2;
        // Every name is at least one character, so this much is always there.
        let least = fixed.iter().map(String::len).sum::<usize>() + 1 + usize::from(with_table);
        if least > MAX_TOPIC_LEN {
            return Err(format!(
                "{s:?}: its topics would be at least {least} characters long; Kafka allows at most {MAX_TOPIC_LEN}"
            ));
        }
        let [prefix, middle, suffix] = fixed;
        Ok(TopicExpr {
            text: s.into(),
            prefix: prefix.into(),
            middle: middle.into(),
            with_table,
            suffix: suffix.into(),
        })
    }

    /// The topic of table `t`: the expression with `t`'s sanitised names in place of
    /// the placeholders. An error names the table and says why the topic is invalid
    /// (too long, or `.`, `..` or empty).
    pub(crate) fn expand(&self, t: &TableName) -> Result<String, String> {
        let mut topic = String::with_capacity(
            self.prefix.len()
                + t.schema().len()
                + self.middle.len()
                + t.table().len()
                + self.suffix.len(),
        );
        topic.push_str(&self.prefix);
        push_sanitized(&mut topic, t.schema());
        topic.push_str(&self.middle);
        if self.with_table {
            push_sanitized(&mut topic, t.table());
            topic.push_str(&self.suffix);
        }
        // Only ASCII is left, so bytes are characters.
        if topic.len() > MAX_TOPIC_LEN {
            return Err(format!(
                "the topic of table {t} would be {} characters long; Kafka allows at most {MAX_TOPIC_LEN}",
                topic.len()
            ));
        }
        if topic.is_empty() || topic == "." || topic == ".." {
            return Err(format!(
                "the topic of table {t} would be {topic:?}, which is not a valid Kafka topic name"
            ));
        }
        Ok(topic)
    }
}

impl fmt::Debug for TopicExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TopicExpr").field(&self.text).finish()
    }
}

/// Picks the topic and partition of each event; shared by the dispatcher threads.
///
/// Which rule applies to a table is decided once and cached, so the per-row cost is a
/// read lock and a hash-map lookup per question (none without rules), plus the
/// partition hash. The caches hold one entry per table seen, and are never pruned.
pub(crate) struct Router {
    default_topic: Arc<str>,
    topic_rules: Vec<(TableMatcher, TopicExpr)>,
    partition_rules: Vec<(TableMatcher, PartitionRule)>,
    /// The topic of each table seen.
    topics: RwLock<HashMap<TableName, Arc<str>>>,
    /// The index in `partition_rules` of each table's rule; `None` for the default.
    rules: RwLock<HashMap<TableName, Option<usize>>>,
}

impl Router {
    /// A router sending unmatched tables to `default_topic` and partitioning them by
    /// [`PartitionRule::Table`]; in each list the first matching rule wins.
    pub(crate) fn new(
        default_topic: String,
        topic_rules: Vec<(TableMatcher, TopicExpr)>,
        partition_rules: Vec<(TableMatcher, PartitionRule)>,
    ) -> Router {
        Router {
            default_topic: default_topic.into(),
            topic_rules,
            partition_rules,
            topics: RwLock::new(HashMap::new()),
            rules: RwLock::new(HashMap::new()),
        }
    }

    /// The topic of `table`: the first matching topic rule's expansion, else the
    /// default topic. Cached per table: every call for a table returns the same `Arc`.
    ///
    /// An expansion that is not a valid topic name is
    /// [`Error::KafkaInvalidConfig`] (parameter `topic-rule expression`) naming the
    /// expression, the table and the problem; it is not cached.
    pub(crate) fn topic(&self, table: &TableName) -> crate::Result<Arc<str>> {
        if self.topic_rules.is_empty() {
            return Ok(self.default_topic.clone());
        }
        if let Some(topic) = self.topics.read().get(table) {
            return Ok(topic.clone());
        }
        let topic: Arc<str> = match self.topic_rules.iter().find(|(m, _)| m.matches(table)) {
            None => self.default_topic.clone(),
            Some((m, e)) => e
                .expand(table)
                .map_err(|reason| Error::KafkaInvalidConfig {
                    param: "topic-rule expression".into(),
                    reason: format!("{:?} (rule for {:?}): {reason}", e.text, m.text),
                })?
                .into(),
        };
        // Another thread may have got here first: keep its Arc, so all callers share one.
        Ok(self
            .topics
            .write()
            .entry(table.clone())
            .or_insert(topic)
            .clone())
    }

    /// The partition choice of a row: [`PartitionChoice::Hash`] per the first matching
    /// partition rule (default [`PartitionRule::Table`]), as the
    /// [module documentation](self) defines it.
    pub(crate) fn partition(&self, row: &RowChange) -> PartitionChoice {
        let hash = match self.rule(&row.table) {
            None | Some(PartitionRule::Table) => table_hasher(&row.table).finalize(),
            Some(PartitionRule::IndexValue) => {
                let mut h = table_hasher(&row.table);
                for c in row.key_columns() {
                    hash_column(&mut h, &c.name, &c.value);
                }
                h.finalize()
            }
            Some(PartitionRule::Columns(names)) => {
                let mut h = table_hasher(&row.table);
                let image = row.current();
                for name in names {
                    let value = image.iter().find(|c| c.name == *name).map(|c| &c.value);
                    hash_column(&mut h, name, value.unwrap_or(&Value::Null));
                }
                h.finalize()
            }
            Some(PartitionRule::Ts) => return PartitionChoice::Hash(row.commit_ts),
        };
        PartitionChoice::Hash(u64::from(hash))
    }

    /// The partition rule of `table`, `None` for the default; cached per table.
    fn rule(&self, table: &TableName) -> Option<&PartitionRule> {
        if self.partition_rules.is_empty() {
            return None;
        }
        let cached = self.rules.read().get(table).copied();
        let index = match cached {
            Some(index) => index,
            None => {
                let index = self
                    .partition_rules
                    .iter()
                    .position(|(m, _)| m.matches(table));
                self.rules.write().insert(table.clone(), index);
                index
            }
        };
        index.map(|i| &self.partition_rules[i].1)
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("default_topic", &self.default_topic)
            .field("topic_rules", &self.topic_rules)
            .field("partition_rules", &self.partition_rules)
            .finish_non_exhaustive()
    }
}

/// The value bytes of NULL (and of floats without a text form).
const NULL_BYTE: u8 = 0xFF;

/// A hasher fed with `schema 0x00 table`.
fn table_hasher(t: &TableName) -> Hasher {
    let mut h = Hasher::new();
    h.update(t.schema().as_bytes());
    h.update(&[0]);
    h.update(t.table().as_bytes());
    h
}

/// Feeds `0x00 name 0x00 value-bytes` to `h`.
fn hash_column(h: &mut Hasher, name: &str, value: &Value) {
    h.update(&[0]);
    h.update(name.as_bytes());
    h.update(&[0]);
    match value {
        // The same bytes as `to_text`, without its copy.
        Value::Decimal(s) | Value::Text(s) | Value::Json(s) => h.update(s.as_bytes()),
        Value::Null => h.update(&[NULL_BYTE]),
        other => match other.to_text() {
            Some(text) => h.update(text.as_bytes()),
            None => h.update(&[NULL_BYTE]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Column;

    fn t(schema: impl Into<String>, table: impl Into<String>) -> TableName {
        TableName::new(schema, table)
    }

    fn m(s: &str) -> TableMatcher {
        TableMatcher::parse(s).unwrap()
    }

    fn e(s: &str) -> TopicExpr {
        TopicExpr::parse(s).unwrap()
    }

    fn hash(choice: PartitionChoice) -> u64 {
        match choice {
            PartitionChoice::Hash(h) => h,
            other => panic!("expected a hash, got {other:?}"),
        }
    }

    fn router(partition_rules: Vec<(&str, PartitionRule)>) -> Router {
        Router::new(
            "default".into(),
            Vec::new(),
            partition_rules
                .into_iter()
                .map(|(s, r)| (m(s), r))
                .collect(),
        )
    }

    /// The hash definition of the module docs, written out the slow way.
    fn reference(table: &TableName, columns: &[(&str, &Value)]) -> u64 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(table.schema().as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(table.table().as_bytes());
        for (name, value) in columns {
            bytes.push(0);
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            match value.to_text() {
                Some(text) => bytes.extend_from_slice(text.as_bytes()),
                None => bytes.push(0xFF),
            }
        }
        u64::from(crc32fast::hash(&bytes))
    }

    fn order(id: i64, region: &str) -> RowChange {
        RowChange::insert(
            t("shop", "orders"),
            435_000_000_000_000_000,
            vec![
                Column::key("id", Value::Int(id)),
                Column::new("region", Value::Text(region.into())),
            ],
        )
    }

    #[test]
    fn matcher_wildcards() {
        assert!(m("*.*").matches(&t("any", "thing")));
        assert!(m("*.*").matches(&t("", "")));
        assert!(m("db.*").matches(&t("db", "t")));
        assert!(!m("db.*").matches(&t("db2", "t")));
        assert!(m("db.orders_?").matches(&t("db", "orders_1")));
        assert!(!m("db.orders_?").matches(&t("db", "orders_10")));
        assert!(!m("db.orders_?").matches(&t("db", "orders_")));
        assert!(m("d?.*_log").matches(&t("db", "audit_log")));
        assert!(m("db.t").matches(&t("db", "t")));
        assert!(!m("db.t").matches(&t("db", "t2")));
        // Split at the first dot: the table part may hold dots, the schema part cannot.
        assert!(m("db.a.b").matches(&t("db", "a.b")));
        assert!(!m("db.a.b").matches(&t("db.a", "b")));
        // Case-sensitive.
        assert!(!m("DB.*").matches(&t("db", "t")));
        assert!(!m("db.T").matches(&t("db", "t")));
        // Non-ASCII: `?` is one character.
        assert!(m("db.caf?").matches(&t("db", "café")));
    }

    #[test]
    fn matcher_parse_errors() {
        for (s, expected) in [
            ("db", "no '.'"),
            ("", "no '.'"),
            (".t", "schema pattern is empty"),
            ("db.", "table pattern is empty"),
            ("  .t", "schema pattern is empty"),
            ("db. ", "table pattern is empty"),
            (".", "schema pattern is empty"),
        ] {
            let err = TableMatcher::parse(s).unwrap_err();
            assert!(err.contains(expected), "{s:?}: {err}");
        }
        assert_eq!(format!("{:?}", m("db.*")), "TableMatcher(\"db.*\")");
    }

    #[test]
    fn topic_rules_first_match_wins_and_unmatched_use_the_default() {
        let r = Router::new(
            "fallback".into(),
            vec![
                (m("db.orders_?"), e("orders_{schema}")),
                (m("db.*"), e("{schema}.{table}")),
                (m("db.never"), e("never_{schema}")),
            ],
            Vec::new(),
        );
        assert_eq!(&*r.topic(&t("db", "orders_1")).unwrap(), "orders_db");
        assert_eq!(&*r.topic(&t("db", "users")).unwrap(), "db.users");
        assert_eq!(&*r.topic(&t("db", "never")).unwrap(), "db.never");
        assert_eq!(&*r.topic(&t("other", "users")).unwrap(), "fallback");
        // Without rules, every table goes to the default topic.
        let r = Router::new("fallback".into(), Vec::new(), Vec::new());
        assert_eq!(&*r.topic(&t("db", "users")).unwrap(), "fallback");
    }

    #[test]
    fn expression_parse_errors() {
        for (s, expected) in [
            ("", "has no {schema}"),
            ("cdc", "has no {schema}"),
            ("cdc_{table}", "has no {schema}"),
            ("{table}_{schema}", "{table} comes before {schema}"),
            ("{schema}_{schema}", "{schema} 2 times"),
            ("{schema}_{table}_{table}", "{table} 2 times"),
            ("cdc {schema}", "character ' ' at index 3"),
            ("{schema}/{table}", "character '/' at index 8"),
            ("{Schema}", "character '{' at index 0"),
            ("{schema", "character '{' at index 0"),
            ("{schema}}", "character '}' at index 8"),
            ("é{schema}", "character 'é' at index 0"),
        ] {
            let err = TopicExpr::parse(s).unwrap_err();
            assert!(err.contains(expected), "{s:?}: {err}");
        }
        // Fixed text that alone leaves no room for a name.
        let long = format!("{}{{schema}}", "x".repeat(MAX_TOPIC_LEN));
        let err = TopicExpr::parse(&long).unwrap_err();
        assert!(err.contains("at least 250 characters"), "{err}");
        assert!(TopicExpr::parse(&format!("{}{{schema}}", "x".repeat(MAX_TOPIC_LEN - 1))).is_ok());
    }

    #[test]
    fn expression_shapes() {
        let table = t("db", "t");
        for (s, expected) in [
            ("{schema}", "db"),
            ("{schema}{table}", "dbt"),
            ("cdc-{schema}", "cdc-db"),
            ("{schema}_suffix", "db_suffix"),
            ("pre.{schema}.mid.{table}.suf", "pre.db.mid.t.suf"),
            ("A-z_0.9{schema}{table}", "A-z_0.9dbt"),
        ] {
            assert_eq!(e(s).expand(&table).unwrap(), expected, "{s}");
        }
        assert_eq!(
            format!("{:?}", e("x_{schema}")),
            "TopicExpr(\"x_{schema}\")"
        );
    }

    #[test]
    fn expansion_sanitises_names() {
        let x = e("{schema}_{table}");
        assert_eq!(x.expand(&t("db-1", "my table")).unwrap(), "db-1_my_table");
        assert_eq!(
            e("{schema}.{table}")
                .expand(&t("db-1", "my table"))
                .unwrap(),
            "db-1.my_table"
        );
        // One `_` per character, not per byte.
        assert_eq!(x.expand(&t("dé", "a/b{c}")).unwrap(), "d__a_b_c_");
        assert_eq!(x.expand(&t("Db.9", "t-x_y")).unwrap(), "Db.9_t-x_y");
    }

    #[test]
    fn expansion_length_limit() {
        let x = e("{schema}_{table}");
        let ok = t("s", "t".repeat(MAX_TOPIC_LEN - 2));
        assert_eq!(x.expand(&ok).unwrap().len(), MAX_TOPIC_LEN);
        let long = t("s", "t".repeat(MAX_TOPIC_LEN - 1));
        let err = x.expand(&long).unwrap_err();
        assert!(err.contains("250 characters"), "{err}");
        assert!(err.contains("at most 249"), "{err}");
        assert!(err.contains("s.ttt"), "names the table: {err}");
        // Sanitised non-ASCII counts as one character each.
        let wide = t("s", "é".repeat(MAX_TOPIC_LEN - 2));
        assert_eq!(x.expand(&wide).unwrap().len(), MAX_TOPIC_LEN);
    }

    #[test]
    fn expansion_rejects_dot_dotdot_and_empty() {
        let x = e("{schema}");
        for schema in [".", ".."] {
            let err = x.expand(&t(schema, "t")).unwrap_err();
            assert!(err.contains("not a valid Kafka topic name"), "{err}");
        }
        assert!(x.expand(&t("", "t")).is_err());
        assert!(e("{schema}{table}").expand(&t(".", ".")).is_err());
        assert_eq!(e("{schema}{table}").expand(&t(".", "..")).unwrap(), "...");
        assert_eq!(e("x{schema}").expand(&t(".", "t")).unwrap(), "x.");
    }

    #[test]
    fn topic_error_is_invalid_config_naming_table_and_expression() {
        let r = Router::new(
            "fallback".into(),
            vec![(m("*.*"), e("{schema}_{table}"))],
            Vec::new(),
        );
        let long = t("db", "t".repeat(300));
        let err = r.topic(&long).unwrap_err();
        assert_eq!(err.code(), "CDC:ErrKafkaInvalidConfig");
        match &err {
            Error::KafkaInvalidConfig { param, reason } => {
                assert_eq!(param, "topic-rule expression");
                assert!(reason.contains("db.ttt"), "{reason}");
                assert!(reason.contains("{schema}_{table}"), "{reason}");
                assert!(reason.contains("303 characters"), "{reason}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        // Errors are not cached; other tables still work.
        assert!(r.topic(&long).is_err());
        assert_eq!(&*r.topic(&t("db", "ok")).unwrap(), "db_ok");
    }

    #[test]
    fn topics_are_cached() {
        let r = Router::new(
            "fallback".into(),
            vec![(m("db.*"), e("cdc_{schema}_{table}"))],
            Vec::new(),
        );
        let a = r.topic(&t("db", "t")).unwrap();
        // A different TableName value with the same names hits the same entry.
        let b = r.topic(&t("db", "t")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "cdc_db_t");
        let d1 = r.topic(&t("other", "t")).unwrap();
        let d2 = r.topic(&t("other", "t")).unwrap();
        assert!(Arc::ptr_eq(&d1, &d2));
        assert_eq!(&*d1, "fallback");
        assert_eq!(r.topics.read().len(), 2);
    }

    #[test]
    fn router_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Router>();
        let r = Arc::new(Router::new(
            "fallback".into(),
            vec![(m("*.*"), e("{schema}-{table}"))],
            vec![(m("*.*"), PartitionRule::IndexValue)],
        ));
        let topics: Vec<Arc<str>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let r = &r;
                    s.spawn(move || {
                        let row = order(1, "eu");
                        assert_eq!(r.partition(&row), r.partition(&row));
                        r.topic(&row.table).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(topics.iter().all(|x| Arc::ptr_eq(x, &topics[0])));
    }

    #[test]
    fn pinned_crc32() {
        // CRC-32/IEEE of b"db\0t", from zlib (Python's zlib.crc32) as the reference.
        assert_eq!(crc32fast::hash(b"db\0t"), 0x893b_1523);
        let r = router(Vec::new());
        let row = RowChange::insert(t("db", "t"), 1, vec![Column::key("id", Value::Int(1))]);
        assert_eq!(r.partition(&row), PartitionChoice::Hash(0x893b_1523));
        // IndexValue over b"shop\0orders\0id\042" (zlib.crc32 = 441757783).
        let r = router(vec![("*.*", PartitionRule::IndexValue)]);
        assert_eq!(
            r.partition(&order(42, "eu")),
            PartitionChoice::Hash(441_757_783)
        );
    }

    #[test]
    fn worked_example_from_the_docs() {
        let row = order(42, "eu");
        let cases = [
            (PartitionRule::Table, 3_037_741_618, 2),
            (PartitionRule::IndexValue, 441_757_783, 3),
            (
                PartitionRule::Columns(vec!["region".into(), "id".into()]),
                1_038_972_649,
                1,
            ),
            (PartitionRule::Ts, 435_000_000_000_000_000, 0),
        ];
        for (rule, expected, partition) in cases {
            let h = hash(router(vec![("shop.*", rule.clone())]).partition(&row));
            assert_eq!(h, expected, "{rule:?}");
            assert_eq!(h % 4, partition, "{rule:?}");
        }
    }

    #[test]
    fn table_rule_is_the_default_and_ignores_the_row() {
        let unruled = router(Vec::new());
        let explicit = router(vec![("shop.*", PartitionRule::Table)]);
        let unmatched = router(vec![("other.*", PartitionRule::Ts)]);
        let expected = reference(&t("shop", "orders"), &[]);
        for row in [order(1, "eu"), order(2, "us")] {
            assert_eq!(hash(unruled.partition(&row)), expected);
            assert_eq!(hash(explicit.partition(&row)), expected);
            assert_eq!(hash(unmatched.partition(&row)), expected);
        }
        // The separator keeps `ab.c` and `a.bc` apart.
        let r =
            |s: &str, tb: &str| hash(unruled.partition(&RowChange::insert(t(s, tb), 1, vec![])));
        assert_ne!(r("ab", "c"), r("a", "bc"));
    }

    #[test]
    fn partition_rules_first_match_wins() {
        let r = router(vec![
            ("shop.orders", PartitionRule::Ts),
            ("shop.*", PartitionRule::IndexValue),
        ]);
        let row = order(7, "eu");
        assert_eq!(r.partition(&row), PartitionChoice::Hash(row.commit_ts));
        let mut other = row.clone();
        other.table = t("shop", "items");
        let id = Value::Int(7);
        assert_eq!(
            hash(r.partition(&other)),
            reference(&other.table, &[("id", &id)])
        );
        // The cached decision is the same on the second row.
        assert_eq!(r.partition(&row), PartitionChoice::Hash(row.commit_ts));
        assert_eq!(r.rules.read().len(), 2);
    }

    #[test]
    fn index_value_hashes_the_key() {
        let r = router(vec![("*.*", PartitionRule::IndexValue)]);
        // Same key, different other columns: same partition.
        assert_eq!(r.partition(&order(1, "eu")), r.partition(&order(1, "us")));
        // Different keys: (almost always) different hashes.
        let hashes: std::collections::HashSet<u64> = (0..1000)
            .map(|id| hash(r.partition(&order(id, "eu"))))
            .collect();
        assert_eq!(hashes.len(), 1000);
        // Composite key, in column order, from the current image.
        let table = t("db", "t");
        let cols = |a: i64, b: &str| {
            vec![
                Column::key("a", Value::Int(a)),
                Column::new("x", Value::Int(0)),
                Column::key("b", Value::Text(b.into())),
            ]
        };
        let insert = RowChange::insert(table.clone(), 1, cols(1, "k"));
        let (a, b) = (Value::Int(1), Value::Text("k".into()));
        let expected = reference(&table, &[("a", &a), ("b", &b)]);
        assert_eq!(hash(r.partition(&insert)), expected);
        let update = RowChange::update(table.clone(), 2, cols(9, "old"), cols(1, "k"));
        assert_eq!(hash(r.partition(&update)), expected);
        let delete = RowChange::delete(table.clone(), 3, cols(1, "k"));
        assert_eq!(hash(r.partition(&delete)), expected);
    }

    #[test]
    fn index_value_without_key_hashes_like_table() {
        let r = router(vec![("*.*", PartitionRule::IndexValue)]);
        let row = RowChange::insert(
            t("db", "t"),
            1,
            vec![
                Column::new("a", Value::Int(1)),
                Column::new("b", Value::Int(2)),
            ],
        );
        let table_hash = hash(router(Vec::new()).partition(&row));
        assert_eq!(hash(r.partition(&row)), table_hash);
        assert_eq!(table_hash, 0x893b_1523);
    }

    #[test]
    fn ts_is_the_commit_ts() {
        let r = router(vec![("*.*", PartitionRule::Ts)]);
        for ts in [0, 1, 7, 435_000_000_000_000_000, u64::MAX] {
            let row = RowChange::insert(t("db", "t"), ts, vec![]);
            assert_eq!(r.partition(&row), PartitionChoice::Hash(ts));
        }
    }

    #[test]
    fn columns_hash_the_named_columns_in_list_order() {
        let by = |cols: &[&str]| {
            router(vec![(
                "*.*",
                PartitionRule::Columns(cols.iter().map(|c| c.to_string()).collect()),
            )])
        };
        let row = order(42, "eu");
        let (id, region) = (Value::Int(42), Value::Text("eu".into()));
        let region_id = hash(by(&["region", "id"]).partition(&row));
        let id_region = hash(by(&["id", "region"]).partition(&row));
        assert_eq!(
            region_id,
            reference(&row.table, &[("region", &region), ("id", &id)])
        );
        assert_eq!(
            id_region,
            reference(&row.table, &[("id", &id), ("region", &region)])
        );
        assert_ne!(region_id, id_region, "the list's order matters");
        // Only the named columns count.
        let r = by(&["region"]);
        assert_eq!(r.partition(&order(1, "eu")), r.partition(&order(2, "eu")));
        assert_ne!(r.partition(&order(1, "eu")), r.partition(&order(1, "us")));
        // A missing column counts as NULL (zlib.crc32(b"shop\0orders\0region\0\xff")).
        let missing = RowChange::insert(t("shop", "orders"), 1, vec![]);
        assert_eq!(r.partition(&missing), PartitionChoice::Hash(445_191_905));
        let null = RowChange::insert(
            t("shop", "orders"),
            1,
            vec![Column::new("region", Value::Null)],
        );
        assert_eq!(r.partition(&null), PartitionChoice::Hash(445_191_905));
        // NULL is not the empty text.
        assert_ne!(r.partition(&null), r.partition(&order(1, "")));
    }

    #[test]
    fn every_value_hashes_as_its_text() {
        let r = router(vec![("*.*", PartitionRule::IndexValue)]);
        let table = t("db", "t");
        for value in [
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int(-3),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Decimal("12.50".into()),
            Value::Text("héllo".into()),
            Value::Bytes(vec![0, 255, 1]),
            Value::Json("{\"a\":1}".into()),
        ] {
            let row = RowChange::insert(table.clone(), 1, vec![Column::key("k", value.clone())]);
            assert_eq!(
                hash(r.partition(&row)),
                reference(&table, &[("k", &value)]),
                "{value:?}"
            );
        }
        // Int 1 and Bool true share a text form, and so a hash.
        let row = |v| RowChange::insert(table.clone(), 1, vec![Column::key("k", v)]);
        assert_eq!(
            r.partition(&row(Value::Int(1))),
            r.partition(&row(Value::Bool(true)))
        );
    }
}
