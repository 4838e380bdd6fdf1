//! `gen:` — the built-in workload: `tables` tables of `rows` row events each, pushed by
//! `producers` producer threads (default: one per table, at most [`DEFAULT_PRODUCERS`]),
//! each sending to its share of the tables (table `t` belongs to producer
//! `t % producers`), one row to each of its tables in turn, every table's rows in order.
//!
//! Row `i` (0-based) of table `t` is a pure function of `(seed, t, i)`: its columns come
//! from a `fastrand::Rng` seeded from those three, so the same spec always produces the
//! same rows, and a restart can regenerate any row without replaying the ones before it.
//! Nothing is built ahead: each producer makes its row, sends it, and forgets it.
//!
//! Columns: `id` (key, unsigned), `version` (how many times this `id` was written),
//! `amount` (decimal), `note` (text padded so the row's values are about `row-size`
//! bytes). With `spread=N` the ids cycle over `1..=N`: the first `N` rows insert them, each
//! later row updates one (its old image is that id's previous row). Without it, every row
//! inserts a new id.
//!
//! Commit ts are TSOs from the wall clock (`tso::now()`), strictly increasing per table.
//! For restarts under `--supervise`, each producer keeps the `(commit ts, row)` pairs it
//! sent that the table's checkpoint has not yet passed (pruned every [`PRUNE_EVERY`]
//! rows, so bounded by what is in flight), and its dispatcher handle. The next attempt
//! (from the changefeed's checkpoint `from_ts`) resumes each table at the first row it
//! sent above both `from_ts` and the table's own final checkpoint in the last attempt,
//! with new, later commit ts: nothing acknowledged is lost, little is sent twice.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use changefeed::{
    tso, Column, Dispatcher, DispatcherManager, Error, Event, Result, RowChange, TableName, Value,
};
use fastrand::Rng;

use crate::source::Source;

/// A producer looks at its table's checkpoint (to forget acknowledged rows) this often.
const PRUNE_EVERY: u64 = 256;
/// Longest single sleep of a rate-limited producer, so that a stop is seen promptly.
const MAX_PACING_SLEEP: Duration = Duration::from_millis(50);
/// Largest `row-size` accepted.
const MAX_ROW_SIZE: usize = 16 << 20;
/// Bytes of a row's values besides `note`: `id`, `version` (8 each) and about 8 for
/// `amount`.
const FIXED_VALUE_BYTES: usize = 24;
/// Most producer threads `gen:` starts unless `producers=` says otherwise: one per table
/// up to this many, so a run over many tables does not start a thread per table.
pub const DEFAULT_PRODUCERS: usize = 64;
/// Largest `producers=`.
const MAX_PRODUCERS: usize = 4096;
/// The schema of the generated tables.
pub const SCHEMA: &str = "gen";

/// The `gen:` parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct GenSpec {
    /// Number of tables, each with its own dispatcher.
    pub tables: usize,
    /// Producer threads (`None`: one per table, at most [`DEFAULT_PRODUCERS`]); never
    /// more than there are tables.
    pub producers: Option<usize>,
    /// Row events per table.
    pub rows: u64,
    /// Approximate bytes of a row's values.
    pub row_size: usize,
    /// Seed of the content.
    pub seed: u64,
    /// Distinct ids per table (`None`: every row a new id).
    pub spread: Option<u64>,
    /// Rows per second, all tables together (`None`: as fast as the sink takes them).
    pub rate: Option<f64>,
}

impl Default for GenSpec {
    fn default() -> Self {
        GenSpec {
            tables: 8,
            producers: None,
            rows: 100_000,
            row_size: 200,
            seed: 1,
            spread: None,
            rate: None,
        }
    }
}

impl GenSpec {
    /// Parses the part after `gen:`: `key=value` pairs separated by commas, every key
    /// optional.
    pub fn parse(params: &str) -> std::result::Result<GenSpec, String> {
        let mut spec = GenSpec::default();
        for pair in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("gen parameter {pair:?} is not key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            match key {
                "tables" => spec.tables = number(key, value, 1, 100_000)? as usize,
                "producers" => {
                    spec.producers = Some(number(key, value, 1, MAX_PRODUCERS as u64)? as usize)
                }
                "rows" => spec.rows = number(key, value, 0, u64::MAX)?,
                "row-size" => spec.row_size = number(key, value, 0, MAX_ROW_SIZE as u64)? as usize,
                "seed" => spec.seed = number(key, value, 0, u64::MAX)?,
                "spread" => spec.spread = Some(number(key, value, 1, u64::MAX)?),
                "rate" => {
                    let rate: f64 = value
                        .replace('_', "")
                        .parse()
                        .map_err(|_| format!("gen parameter rate={value:?} is not a number"))?;
                    if !(rate > 0.0 && rate.is_finite()) {
                        return Err(format!(
                            "gen parameter rate={value:?} must be a positive number of rows per second"
                        ));
                    }
                    spec.rate = Some(rate);
                }
                other => {
                    return Err(format!(
                        "unknown gen parameter {other:?}; expected tables, producers, rows, row-size, seed, spread or rate"
                    ))
                }
            }
        }
        Ok(spec)
    }

    /// The number of producer threads: `producers`, or one per table up to
    /// [`DEFAULT_PRODUCERS`]; at most one per table.
    pub fn producer_count(&self) -> usize {
        self.producers
            .unwrap_or(DEFAULT_PRODUCERS)
            .min(self.tables)
            .max(1)
    }
}

fn number(key: &str, value: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    let n: u64 = value
        .replace('_', "")
        .parse()
        .map_err(|_| format!("gen parameter {key}={value:?} is not a whole number"))?;
    if n < min || n > max {
        return Err(format!(
            "gen parameter {key}={n} is out of range [{min}, {max}]"
        ));
    }
    Ok(n)
}

/// Makes row `i` of table `t`.
pub struct Generator {
    spec: GenSpec,
    tables: Vec<TableName>,
    /// Random text `note` values are cut from.
    filler: String,
}

impl Generator {
    pub fn new(spec: GenSpec) -> Generator {
        let tables = (0..spec.tables)
            .map(|t| TableName::new(SCHEMA, format!("t{t}")))
            .collect();
        let mut rng = Rng::with_seed(spec.seed);
        let len = note_len(spec.row_size) + 4096;
        let filler = (0..len).map(|_| rng.alphanumeric()).collect();
        Generator {
            spec,
            tables,
            filler,
        }
    }

    pub fn table(&self, t: usize) -> &TableName {
        &self.tables[t]
    }

    fn spread(&self) -> u64 {
        self.spec.spread.unwrap_or(u64::MAX)
    }

    /// The row image written by row `i` of table `t`.
    pub fn image(&self, t: usize, i: u64) -> Vec<Column> {
        let mut rng = Rng::with_seed(mix(self.spec.seed, t as u64, i));
        let spread = self.spread();
        let note_len = note_len(self.spec.row_size);
        let start = rng.usize(..=self.filler.len() - note_len);
        vec![
            Column::key("id", Value::UInt(i % spread + 1)),
            Column::new("version", Value::UInt(i / spread + 1)),
            Column::new(
                "amount",
                Value::Decimal(format!("{}.{:02}", rng.u32(..100_000), rng.u32(..100))),
            ),
            Column::new(
                "note",
                Value::Text(self.filler[start..start + note_len].to_string()),
            ),
        ]
    }

    /// Row `i` of table `t`, committed at `commit_ts`: an insert of a new id, or (with a
    /// spread) an update of an id written before.
    pub fn row(&self, t: usize, i: u64, commit_ts: u64) -> RowChange {
        let table = self.tables[t].clone();
        let spread = self.spread();
        if i < spread {
            RowChange::insert(table, commit_ts, self.image(t, i))
        } else {
            RowChange::update(
                table,
                commit_ts,
                self.image(t, i - spread),
                self.image(t, i),
            )
        }
    }
}

fn note_len(row_size: usize) -> usize {
    row_size.saturating_sub(FIXED_VALUE_BYTES)
}

/// A 64-bit seed from `(seed, t, i)` (splitmix64 finaliser on each step).
fn mix(seed: u64, t: u64, i: u64) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    splitmix(splitmix(splitmix(seed) ^ t) ^ i)
}

/// One table's position, kept across attempts.
#[derive(Default)]
struct TableState {
    /// The next row to send.
    next: u64,
    /// The last commit ts used (commit ts keep increasing across attempts).
    last_ts: u64,
    /// `(commit ts, row)` of rows sent that the table's checkpoint has not passed yet,
    /// as far as the producer knows.
    unacked: VecDeque<(u64, u64)>,
    /// The table's dispatcher in the last attempt.
    previous: Option<Dispatcher>,
}

impl TableState {
    /// Where an attempt from checkpoint `from_ts` starts, given the table's own final
    /// checkpoint in the last attempt (`acked`): rows at or below either are
    /// acknowledged, so are the rows pruned before; the first row sent above both is the
    /// first that may not be.
    fn resume(&mut self, from_ts: u64, acked: Option<u64>) {
        let acked = acked.unwrap_or(0).max(from_ts);
        if let Some(&(_, row)) = self.unacked.iter().find(|(ts, _)| *ts > acked) {
            self.next = row;
        }
        self.unacked.clear();
    }
}

/// The `gen:` source.
pub struct GenSource {
    gen: Arc<Generator>,
    state: Vec<TableState>,
}

impl GenSource {
    pub fn new(spec: GenSpec) -> GenSource {
        let state = (0..spec.tables).map(|_| TableState::default()).collect();
        GenSource {
            gen: Arc::new(Generator::new(spec)),
            state,
        }
    }
}

impl Source for GenSource {
    fn feed(&mut self, manager: &DispatcherManager, from_ts: u64, stop: &AtomicBool) -> Result<()> {
        let dispatchers = (0..self.gen.spec.tables)
            .map(|t| manager.add_dispatcher(self.gen.table(t).clone()))
            .collect::<Result<Vec<_>>>()?;
        let producers = self.gen.spec.producer_count();
        // Each producer's share: table t goes to producer t % producers.
        let mut shares: Vec<Vec<Share<'_>>> = (0..producers).map(|_| Vec::new()).collect();
        for (t, (state, dispatcher)) in self.state.iter_mut().zip(dispatchers).enumerate() {
            shares[t % producers].push(Share {
                t,
                state,
                dispatcher,
            });
        }
        let tables = self.gen.spec.tables as f64;
        let gen = &*self.gen;
        // Set when a producer cannot be started: the others stop too (the user's `stop`
        // is left alone, so a restart runs in full).
        let abandoned = AtomicBool::new(false);
        let stop = Stop {
            requested: stop,
            abandoned: &abandoned,
        };
        thread::scope(|s| {
            let mut threads = Vec::new();
            for (p, share) in shares.into_iter().enumerate() {
                // The rate is over all tables: each producer paces its share of it.
                let rate = gen.spec.rate.map(|r| r * share.len() as f64 / tables);
                let name = format!("gen-{p}");
                let producer = thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(s, move || produce(gen, share, from_ts, stop, rate))
                    .map_err(|e| Error::ThreadSpawn {
                        thread: name,
                        source: Arc::new(e),
                    });
                match producer {
                    Ok(p) => threads.push(p),
                    Err(e) => {
                        // The ones started stop at their next row.
                        abandoned.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            let mut outcome = Ok(());
            for p in threads {
                let r = p.join().unwrap_or_else(|payload| {
                    Err(Error::FeedPanicked {
                        message: panic_text(&*payload),
                    })
                });
                if outcome.is_ok() {
                    outcome = r;
                }
            }
            outcome
        })
    }
}

/// One table of a producer's share: its index, where it stands, its dispatcher.
struct Share<'a> {
    t: usize,
    state: &'a mut TableState,
    dispatcher: Dispatcher,
}

/// When producers stop early: on the user's request, or because the attempt is
/// abandoned.
#[derive(Clone, Copy)]
struct Stop<'a> {
    requested: &'a AtomicBool,
    abandoned: &'a AtomicBool,
}

impl Stop<'_> {
    fn is_set(&self) -> bool {
        self.requested.load(Ordering::Relaxed) || self.abandoned.load(Ordering::Relaxed)
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// One producer: sends the rows of its `share` of tables from where each table stands,
/// one row to each table in turn, then a watermark on each at its last commit ts (so the
/// checkpoint reaches it once everything is acknowledged). Stops early, with the
/// watermarks, when `stop` is set. `rate`: rows per second over the whole share.
fn produce(
    gen: &Generator,
    mut share: Vec<Share<'_>>,
    from_ts: u64,
    stop: Stop<'_>,
    rate: Option<f64>,
) -> Result<()> {
    for table in &mut share {
        let acked = table.state.previous.take().map(|d| d.checkpoint_ts());
        table.state.resume(from_ts, acked);
        // Kept for the next attempt: its final checkpoint tells which rows were
        // acknowledged.
        table.state.previous = Some(table.dispatcher.clone());
        table.state.last_ts = table.state.last_ts.max(from_ts);
    }
    send_rows(gen, &mut share, stop, rate)?;
    for table in &share {
        table
            .dispatcher
            .send(Event::Resolved(table.state.last_ts))
            .map_err(|e| e.cause)?;
    }
    Ok(())
}

/// The rows of [`produce`], round-robin over the share.
fn send_rows(
    gen: &Generator,
    share: &mut [Share<'_>],
    stop: Stop<'_>,
    rate: Option<f64>,
) -> Result<()> {
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let mut any = false;
        for table in share.iter_mut() {
            let state = &mut *table.state;
            if state.next >= gen.spec.rows {
                continue;
            }
            any = true;
            if let Some(rate) = rate {
                loop {
                    if stop.is_set() {
                        return Ok(());
                    }
                    let due = started + Duration::from_secs_f64(sent as f64 / rate);
                    let now = Instant::now();
                    if due <= now {
                        break;
                    }
                    thread::sleep((due - now).min(MAX_PACING_SLEEP));
                }
            } else if stop.is_set() {
                return Ok(());
            }
            let i = state.next;
            let ts = tso::now().max(state.last_ts + 1);
            table
                .dispatcher
                .send(gen.row(table.t, i, ts))
                .map_err(|e| e.cause)?;
            state.last_ts = ts;
            state.next = i + 1;
            state.unacked.push_back((ts, i));
            sent += 1;
            if (i + 1) % PRUNE_EVERY == 0 {
                let checkpoint = table.dispatcher.checkpoint_ts();
                while state
                    .unacked
                    .front()
                    .is_some_and(|&(ts, _)| ts <= checkpoint)
                {
                    state.unacked.pop_front();
                }
            }
        }
        if !any {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_every_key() {
        assert_eq!(GenSpec::parse("").unwrap(), GenSpec::default());
        let spec = GenSpec::parse(
            "tables=2, rows=1_000,row-size=64,seed=7,spread=10,rate=500,producers=3",
        )
        .unwrap();
        assert_eq!(
            spec,
            GenSpec {
                tables: 2,
                producers: Some(3),
                rows: 1000,
                row_size: 64,
                seed: 7,
                spread: Some(10),
                rate: Some(500.0),
            }
        );
    }

    #[test]
    fn producers_default_to_one_per_table_up_to_the_bound_and_never_exceed_tables() {
        let spec = |tables, producers| GenSpec {
            tables,
            producers,
            ..GenSpec::default()
        };
        assert_eq!(spec(8, None).producer_count(), 8);
        assert_eq!(spec(100_000, None).producer_count(), DEFAULT_PRODUCERS);
        assert_eq!(spec(100_000, Some(16)).producer_count(), 16);
        assert_eq!(spec(3, Some(16)).producer_count(), 3);
    }

    #[test]
    fn rejects_bad_parameters_naming_them() {
        let err = |s| GenSpec::parse(s).unwrap_err();
        assert!(
            err("tabels=3").contains("\"tabels\""),
            "{}",
            err("tabels=3")
        );
        assert!(err("tables=0").contains("tables=0"));
        assert!(err("producers=0").contains("producers=0"));
        assert!(err("rows=lots").contains("rows=\"lots\""));
        assert!(err("rate=0").contains("rate"));
        assert!(err("spread=0").contains("spread"));
        assert!(err("rows").contains("key=value"));
    }

    #[test]
    fn rows_are_a_function_of_seed_table_and_index() {
        let a = Generator::new(GenSpec::default());
        let b = Generator::new(GenSpec::default());
        assert_eq!(a.row(3, 12_345, 9), b.row(3, 12_345, 9));
        assert_ne!(a.image(3, 12_345), a.image(3, 12_346));
        assert_ne!(a.image(3, 12_345), a.image(4, 12_345));
        let c = Generator::new(GenSpec {
            seed: 2,
            ..GenSpec::default()
        });
        assert_ne!(a.image(3, 12_345), c.image(3, 12_345));
        let size: usize = a.image(0, 0).iter().map(|c| c.value.size()).sum();
        assert!((190..=210).contains(&size), "row values are {size} bytes");
    }

    #[test]
    fn spread_cycles_ids_into_updates() {
        let g = Generator::new(GenSpec {
            spread: Some(3),
            ..GenSpec::default()
        });
        let r = g.row(0, 4, 1);
        assert_eq!(r.kind, changefeed::RowKind::Update);
        assert_eq!(r.new[0].value, Value::UInt(2));
        assert_eq!(r.new[1].value, Value::UInt(2));
        assert_eq!(r.old, g.image(0, 1), "old image is the id's previous row");
        assert_eq!(g.row(0, 2, 1).kind, changefeed::RowKind::Insert);
    }

    /// A sink that acknowledges every 50 messages and fails once it has taken `limit`
    /// messages; what it acknowledged goes to `delivered`.
    struct FailingSink {
        limit: usize,
        taken: usize,
        pending: Vec<changefeed::sink::Message>,
        delivered: Arc<parking_lot::Mutex<Vec<changefeed::sink::Message>>>,
    }

    impl changefeed::sink::Sink for FailingSink {
        fn encoder(&self) -> Arc<dyn changefeed::sink::Encoder> {
            Arc::new(changefeed::codec::CanalJson::default())
        }
        fn write(&mut self, batch: &mut changefeed::sink::Batch) -> Result<()> {
            self.taken += batch.messages().len();
            if self.taken > self.limit {
                return Err(Error::SinkFull {
                    capacity: self.limit,
                });
            }
            self.pending.extend(batch.take_messages());
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            self.delivered.lock().append(&mut self.pending);
            Ok(())
        }
        fn batching(&self) -> changefeed::sink::Batching {
            changefeed::sink::Batching {
                max_messages: 50,
                ..changefeed::sink::Batching::default()
            }
        }
    }

    /// Under the Supervisor, with a sink that fails after 500 messages: each attempt
    /// resumes where the last one was acknowledged, every row arrives (at least once),
    /// and each table's commit ts keep increasing across attempts.
    #[test]
    fn a_supervised_run_resumes_after_each_failure_and_loses_no_row() {
        supervised_run(None);
    }

    /// The same with two producers for three tables: one producer sends to two tables in
    /// turn, each table's rows still in order and none lost.
    #[test]
    fn a_supervised_run_with_fewer_producers_than_tables_loses_no_row() {
        supervised_run(Some(2));
    }

    fn supervised_run(producers: Option<usize>) {
        use std::collections::{BTreeSet, HashMap};

        use changefeed::supervisor::SinkFactory;
        use changefeed::{Supervisor, SupervisorState};

        use crate::progress::Meter;
        use crate::source::CommandFeed;

        const TABLES: usize = 3;
        const ROWS: u64 = 1000;
        const SPREAD: u64 = 300;
        let delivered: Arc<parking_lot::Mutex<Vec<_>>> = Arc::default();
        let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let factory: SinkFactory = {
            let delivered = Arc::clone(&delivered);
            let attempts = Arc::clone(&attempts);
            Box::new(move || {
                attempts.fetch_add(1, Ordering::SeqCst);
                Ok(Box::new(FailingSink {
                    limit: 500,
                    taken: 0,
                    pending: Vec::new(),
                    delivered: Arc::clone(&delivered),
                }))
            })
        };
        let source = GenSource::new(GenSpec {
            tables: TABLES,
            producers,
            rows: ROWS,
            spread: Some(SPREAD),
            row_size: 64,
            ..GenSpec::default()
        });
        let meter = Arc::new(Meter::default());
        let feed = CommandFeed::new(Box::new(source), Arc::default(), Arc::clone(&meter));
        let supervisor = Supervisor::builder("gen-resume")
            .backoff(Duration::from_millis(5), 1.0, Duration::from_millis(5), 0.0)
            .start(factory, feed)
            .unwrap();
        let state = supervisor.wait();
        assert!(matches!(state, SupervisorState::Stopped), "{state:?}");
        let attempts = attempts.load(Ordering::SeqCst);
        assert!(
            (6..=100).contains(&attempts),
            "3,000 rows through sinks of 500, each attempt resuming: {attempts} attempts"
        );

        let mut seen = BTreeSet::new();
        let mut last_ts: HashMap<String, u64> = HashMap::new();
        let delivered = delivered.lock();
        for m in delivered.iter() {
            let v: serde_json::Value = serde_json::from_slice(&m.value).unwrap();
            let table = v["table"].as_str().unwrap().to_string();
            let id: u64 = v["data"][0]["id"].as_str().unwrap().parse().unwrap();
            let version: u64 = v["data"][0]["version"].as_str().unwrap().parse().unwrap();
            let ts = v["_tidb"]["commitTs"].as_u64().unwrap();
            let last = last_ts.entry(table.clone()).or_default();
            assert!(ts > *last, "{table}: commit ts {ts} after {last}");
            *last = ts;
            seen.insert((table, (version - 1) * SPREAD + id - 1));
        }
        for t in 0..TABLES {
            for i in 0..ROWS {
                assert!(
                    seen.contains(&(format!("t{t}"), i)),
                    "row {i} of t{t} is missing"
                );
            }
        }
        assert_eq!(seen.len(), TABLES * ROWS as usize);
        assert!(
            delivered.len() < 2 * TABLES * ROWS as usize,
            "{} rows delivered for 3,000: restarts resend little",
            delivered.len()
        );
        assert_eq!(meter.totals().events, delivered.len() as u64);
        assert_eq!(meter.attempts(), attempts);
    }

    #[test]
    fn resume_starts_at_the_first_row_above_the_checkpoint() {
        let state = |unacked: &[(u64, u64)]| TableState {
            next: 10,
            last_ts: 100,
            unacked: unacked.iter().copied().collect(),
            previous: None,
        };
        let mut s = state(&[(70, 7), (80, 8), (100, 9)]);
        s.resume(75, None);
        assert_eq!(s.next, 8);
        assert!(s.unacked.is_empty());
        let mut s = state(&[(70, 7), (80, 8), (100, 9)]);
        s.resume(75, Some(85));
        assert_eq!(s.next, 9, "the table's own checkpoint went further");
        let mut s = state(&[(70, 7), (80, 8), (100, 9)]);
        s.resume(75, Some(60));
        assert_eq!(s.next, 8, "the changefeed's checkpoint counts too");
        let mut s = state(&[(70, 7)]);
        s.resume(100, None);
        assert_eq!(s.next, 10, "everything sent was acknowledged");
    }
}
