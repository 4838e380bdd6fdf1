//! The main job on its embedded default, no broker needed: 8 tables x 10,000 rows from
//! 8 producer threads into `file:changefeed-out.jsonl` (canal-json, one line per row).
//!
//! `cargo run --release --example quickstart [SINK_URI]`

use std::time::{Duration, Instant};

use changefeed::{sink, tso, Column, DispatcherManager, Event, RowChange, TableName, Value};

const TABLES: usize = 8;
const ROWS: u64 = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let uri = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "file:changefeed-out.jsonl".to_string());
    let (maintainer, heartbeats) = crossbeam_channel::bounded(64);
    let manager = DispatcherManager::builder("quickstart")
        .maintainer(maintainer)
        .start(sink::open(&uri)?)?;
    let start = Instant::now();
    std::thread::scope(|s| -> changefeed::Result<()> {
        for t in 0..TABLES {
            let table = TableName::new("shop", format!("orders_{t}"));
            let dispatcher = manager.add_dispatcher(table.clone())?;
            s.spawn(move || {
                for id in 1..=ROWS {
                    let row = RowChange::insert(
                        table.clone(),
                        tso::now(),
                        vec![
                            Column::key("id", Value::UInt(id)),
                            Column::new("item", Value::Text(format!("item-{id}"))),
                            Column::new("total", Value::Decimal(format!("{}.99", id % 100))),
                        ],
                    );
                    if let Err(e) = dispatcher.send(row) {
                        eprintln!("{}: {}", dispatcher.table(), e.cause);
                        return;
                    }
                }
                let _ = dispatcher.send(Event::Resolved(tso::now()));
            });
        }
        Ok(())
    })?;
    manager.flush(Duration::from_secs(60))?;
    let checkpoint = manager.checkpoint_ts();
    manager.close()?;
    let elapsed = start.elapsed();
    let rows = TABLES as u64 * ROWS;
    println!(
        "{rows} rows to {uri} in {:.2?} ({:.0} rows/s); checkpoint {checkpoint} ({:?}); {} heartbeats",
        elapsed,
        rows as f64 / elapsed.as_secs_f64(),
        humantime::format_rfc3339_millis(tso::to_system_time(checkpoint)),
        heartbeats.try_iter().count(),
    );
    Ok(())
}
