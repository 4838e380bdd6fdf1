#!/usr/bin/env bash
# Runs the engine's concurrency tests under valgrind's two thread checkers, DRD and
# Helgrind, and classifies every report. docs/VALGRIND.md says what it found and why.
#
#   scripts/valgrind.sh                       # every binary, both tools
#   TOOLS=helgrind BINARIES=engine_close scripts/valgrind.sh
#
# Environment:
#   TOOLS        drd and/or helgrind                  (default: "drd helgrind")
#   BINARIES     test binaries (tests/<name>.rs)      (default: the five below)
#   STRESS_RUNS  CHANGEFEED_STRESS_RUNS for engine_stress and
#                CHANGEFEED_SUPERVISOR_STRESS_RUNS for supervisor_stress (default: 5)
#   LIMIT        seconds one binary may run under one tool before it is killed
#                (default: 1800)
#   OUT          where the XML, logs and summary go   (default: target/valgrind)
#
# Why not Miri or the sanitizers: they need a nightly toolchain this machine cannot
# fetch. Valgrind runs the ordinary debug test binaries.
#
#   SUMMARY_ONLY=1  skip the build and the runs; summarise what is in $OUT
#
# Exit status: 0 when every binary passed its tests under both tools and every report
# was attributed to a known synchronisation mechanism; 1 when a report was not (the
# summary lists each with its stack, for a human to read); 3 when every report was
# attributed but a test failed under valgrind (valgrind slows the program 20-50x, so
# tests with time bounds can fail: the .out files say which).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${TOOLS:-"drd helgrind"}
BINARIES=${BINARIES:-"engine_close engine_failures engine_progress engine_stress supervisor"}
STRESS_RUNS=${STRESS_RUNS:-5}
LIMIT=${LIMIT:-1800}
OUT=${OUT:-target/valgrind}

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
command -v python3 >/dev/null || { echo "python3 is needed for the summary" >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# ---------------------------------------------------------------------------------
# Suppressions. Only reports that lie entirely inside the Rust runtime's own
# bookkeeping, which never touches this crate's data: a frame listed here is matched
# anywhere in the reported stack, and everything above it is that function's own
# callees. Everything else is kept, counted and classified by the summary below.
#
# * rust-thread-info: std registers each new thread's guard page in a BTreeMap behind
#   a spin lock made of an AtomicUsize (std/src/sys/pal/unix/stack_overflow/
#   thread_info.rs, `spin_lock_in_setup`). Valgrind does not see an atomic spin lock
#   as a lock, so every thread start "races" with the previous ones on that map. It is
#   std's private data, written only under that lock.
# * rust-output-capture: libtest installs a spawn hook that sets each new thread's
#   output capture (std/src/io/stdio.rs `set_output_capture`, an AtomicBool and a
#   thread-local). Atomic, and libtest's, not ours.
# ---------------------------------------------------------------------------------
SUPP="$OUT/rust-runtime.supp"
cat > "$SUPP" <<'EOF'
{
   rust-thread-info-helgrind
   Helgrind:Race
   ...
   fun:*stack_overflow*thread_info*
}
{
   rust-thread-info-drd
   drd:ConflictingAccess
   ...
   fun:*stack_overflow*thread_info*
}
{
   rust-output-capture-helgrind
   Helgrind:Race
   ...
   fun:*set_output_capture*
}
{
   rust-output-capture-drd
   drd:ConflictingAccess
   ...
   fun:*set_output_capture*
}
EOF

# The premise of the classification below: this crate's own code has no `unsafe`, so
# the compiler already proves it free of data races given that std, crossbeam and
# parking_lot are sound; what valgrind can add is a look at those libraries' unsafe
# code at work, and a check that nothing in ours escapes the mechanisms it names.
UNSAFE=$(grep -rnw unsafe src/ | grep -cvE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
echo "== unsafe in src/: $UNSAFE occurrence(s)"
echo "$UNSAFE" > "$OUT/unsafe.count"

if [ -z "${SUMMARY_ONLY:-}" ]; then
echo "== building the test binaries (debug)"
args=()
for b in $BINARIES; do args+=(--test "$b"); done
cargo test --no-run --message-format=json "${args[@]}" > "$OUT/build.json"
exe_of() {
    python3 - "$OUT/build.json" "$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and m["target"]["name"] == sys.argv[2] and "test" in m["target"]["kind"]):
        print(m["executable"])
EOF
}

# Common options:
#   --fair-sched=yes   crossbeam and parking_lot spin (yield) before they sleep; with
#                      valgrind's default lock, a spinning thread can starve the one it
#                      waits for for a long time.
#   --error-limit=no   report everything (the default stops after 1000 contexts).
#   --num-callers=40   deep enough to reach this crate's frames from inside std.
#   --error-exitcode=99  tells "valgrind reported something" (99) from a failed test
#                      (101) and a kill by the time limit (124/137); the summary then
#                      decides whether the reports are explained.
#   --xml=yes          machine-readable reports for the summary; the text log too.
# DRD: --check-stack-var=no (the default) — stacks are per thread.
# Helgrind: --history-level=full (the default) to get the conflicting access's stack.
COMMON=(--fair-sched=yes --error-limit=no --num-callers=40 --error-exitcode=99
        --suppressions="$SUPP" --child-silent-after-fork=yes)

: > "$OUT/runs.tsv"
for tool in $TOOLS; do
    for b in $BINARIES; do
        exe=$(exe_of "$b")
        [ -n "$exe" ] || { echo "no test binary for $b" >&2; exit 2; }
        echo "== $tool $b"
        start=$(date +%s)
        set +e
        CHANGEFEED_STRESS_RUNS=$STRESS_RUNS CHANGEFEED_SUPERVISOR_STRESS_RUNS=$STRESS_RUNS \
        RUST_BACKTRACE=0 timeout -k 30 "$LIMIT" \
            valgrind --tool="$tool" "${COMMON[@]}" \
                --xml=yes --xml-file="$OUT/$tool-$b.xml" --log-file="$OUT/$tool-$b.log" \
                "$exe" --test-threads=1 > "$OUT/$tool-$b.out" 2>&1
        rc=$?
        set -e
        secs=$(( $(date +%s) - start ))
        result=$(grep -h '^test result:' "$OUT/$tool-$b.out" | tail -1 || true)
        printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$b" "$rc" "$secs" "${result:-no result}" >> "$OUT/runs.tsv"
        echo "   exit $rc after ${secs}s: ${result:-no test result (killed?)}"
    done
done

fi # SUMMARY_ONLY

# ---------------------------------------------------------------------------------
# The summary: every report attributed to the mechanism that orders its accesses.
# ---------------------------------------------------------------------------------
python3 - "$OUT" "$(pwd)" <<'EOF'
import collections, glob, os, re, sys
import xml.etree.ElementTree as ET

out, root = sys.argv[1], sys.argv[2]

def where(f):
    d = f["dir"]
    if d.startswith(root + "/src"): return "ours"
    if d.startswith(root + "/tests"): return "test"
    if "/rustc/" in d or d.startswith("library/"):
        m = re.search(r"library/(\w+)", d + "/" + f["file"])
        return "rust-" + (m.group(1) if m else "?")
    m = re.search(r"/registry/src/[^/]+/([^/]+)", d)
    if m: return re.sub(r"-\d[\w.]*$", "", m.group(1))
    if "valgrind" in f["obj"]: return "valgrind"
    return "libc" if f["obj"] else "?"

def frames(stack):
    def g(f, k):
        e = f.find(k)
        return e.text if e is not None and e.text else ""
    return [dict(fn=g(f, "fn"), dir=g(f, "dir"), file=g(f, "file"), line=g(f, "line"),
                 obj=g(f, "obj")) for f in stack.findall("frame")]

def errors(path):
    counts = {}
    errs = []
    for _, el in ET.iterparse(path):
        if el.tag == "error":
            stacks, text = [], None
            for ch in el:
                if ch.tag in ("what", "xwhat", "auxwhat", "xauxwhat"):
                    t = ch.find("text")
                    text = (t.text if t is not None else ch.text) or ""
                elif ch.tag == "stack":
                    stacks.append((text or "", frames(ch)))
                    text = None
            errs.append(dict(unique=el.findtext("unique"), kind=el.findtext("kind"),
                             stacks=stacks))
            el.clear()
        elif el.tag == "errorcounts":
            for p in el.findall("pair"):
                counts[p.findtext("unique")] = int(p.findtext("count"))
        elif el.tag == "suppcounts":
            counts["__suppressed__"] = sum(int(p.findtext("count")) for p in el.findall("pair"))
    return errs, counts

def short(fn):
    fn = re.sub(r"::\{\{closure\}\}.*$", "", fn)
    return fn.replace("changefeed::", "")

# Functions of this crate (src/) and of the test support (tests/common) in whose own
# frame (no library frame above it) a report lands, and what orders the accesses there.
# src/ has no `unsafe`: every shared access it makes goes through a lock guard, an
# atomic, or a value it owns after a move; the table says which, function by function.
LOCK = "parking_lot lock"
MOVED = "moved through a channel"
PUBLISHED = "immutable after publication"
HARNESS = "libtest harness"
TABLE = [
    # Progress: every field behind `state: Mutex<State>`.
    (r"^progress::Progress::", LOCK),
    # AckSignal: `generation: Mutex<u64>` with its Condvar.
    (r"^progress::AckSignal::", LOCK),
    # Quota: `state: Mutex<State>` (used, closed) with its Condvar; State's own methods
    # run on the guard's contents.
    (r"^quota::(Quota|State)::", LOCK),
    # Shared: phase, lines and registry are Mutexes; the rest is atomics or set once.
    # `send_periodic` reads the phase with its Mutex held (and `cause`, a OnceLock, and
    # `final_sent`, an atomic, beside it).
    (r"^manager::Shared::(begin_close|end|reported|time_out|release|join_dispatchers|finish|wait_closed|state|all_dispatchers|heartbeat|checkpoint_ts|send_periodic)$", LOCK),
    (r"^manager::DispatcherManager::(add_dispatcher|remove_dispatcher|status|close|wait|join_watcher)$", LOCK),
    # DispatcherShared: order, spare_rx, stop_tx, closing_tx are Mutexes.
    (r"^dispatcher::DispatcherShared::(stop|release|status|remove|wake_senders)$", LOCK),
    (r"^dispatcher::Worker::drain$", LOCK),
    # SupervisorShared: state and checkpoint are Mutexes.
    (r"^supervisor::SupervisorShared::", LOCK),
    (r"^<supervisor::SupervisorState as core::clone::Clone>::clone$", LOCK),
    (r"^supervisor::SupervisorState::is_final$", LOCK),
    (r"^supervisor::Supervisor::", LOCK),
    # The error that closed a changefeed: cloned out of the phase Mutex or out of the
    # `cause` OnceLock (set once, read after its Acquire load); its text was written
    # before it was published.
    (r"^<error::Error as core::(clone::Clone>::clone|fmt::Display>::fmt)$", PUBLISHED),
    # TableName is an Arc of two immutable strings, built before it is shared.
    (r"^(event::TableName::(schema|table)|<event::TableName as core::fmt::Display>::fmt)$", PUBLISHED),
    # Batches and events: built by one thread, sent through a crossbeam channel, then
    # owned by the receiver alone (the sink thread, a dispatcher thread).
    (r"^sink_thread::(write|run|flush)$", MOVED),
    (r"^sink::Message::charged_size$", MOVED),
    # A permit travels inside its batch; dropped by whoever holds the batch last (the
    # sink thread after the ack, or a channel dropping what it held).
    (r"^<quota::Permit as core::ops::drop::Drop>::drop$", MOVED),
    (r"^dispatcher::Worker::(build|encode|work|deliver)$", MOVED),
    (r"^dispatcher::send_unless_aborted$", MOVED),
    # A RunningError is built by the watcher and sent in a heartbeat through the
    # maintainer channel; whoever received it owns it (and clones it).
    (r"^<heartbeat::RunningError as core::clone::Clone>::clone$", MOVED),
    # The report hand-off tests (engine_failures.rs) compare the code their producer
    # thread sent them through a channel, and the heartbeats they received.
    (r"^engine_failures::(senders_stay_blocked_until_the_maintainer_takes_the_report|a_maintainer_that_does_not_read_delays_the_release_only_by_the_handoff|a_close_timeout_cuts_the_handoff_short)$", MOVED),
    # Test support (tests/common): the fault sink reads the batches it was handed
    # (moved), the test encoder the events it was handed (moved); its control fields
    # are Mutexes, atomics and channels.
    (r"common::FaultSink as sink::Sink>::(write|flush)$", MOVED),
    (r"common::TestEncoder as sink::Encoder>::encode$", MOVED),
    (r"common::FaultControl::", LOCK),
    (r"common::Seen as core::clone::Clone>::clone$", LOCK),
    # libtest's `main`: the runner thread and the test threads (std mpsc, output
    # capture), nothing of ours.
    (r"^[a-z_]+::main$", HARNESS),
]

# Reports read one by one and found harmless, that no rule above covers. Each entry:
# (test-code function the report lands in, why).
REVIEWED = [
    (r"^engine_failures::sink_error_is_reported_once_and_closes$",
     "DRD: the test compares the causes its scoped producer threads returned "
     "(engine_failures.rs:76); DRD's allocation context shows each string built by that "
     "producer (engine_failures.rs:42), and it is read after ScopedJoinHandle::join "
     "(pthread_join). Same family as 'thread join'."),
]

ATOMIC = re.compile(r"(^|[^a-z])atomic_(load|store|xchg|cxchg|compare_exchange|fetch|add|sub|and|or|xor|swap)|::Atomic\w+::")

def classify(err):
    """(class, detail) for one report, from its access stack (and, for Helgrind, the
    stack of the conflicting access it names)."""
    if not err["stacks"]:
        return ("no stack", "")
    S = err["stacks"][0][1]
    k = next((i for i, f in enumerate(S) if where(f) in ("ours", "test")), None)
    if k is None:
        libs = [where(f) for f in S]
        lib = next((l for l in libs if not l.startswith("rust-") and l not in ("libc", "valgrind", "?")), None)
        fns = " ".join(f["fn"] for f in S)
        if lib:
            return ("library internal", lib)
        if "thread::lifecycle" in fns or "thread_start" in fns or "JoinInner" in fns:
            return ("library internal", "std thread start/join")
        return ("library internal", "std")
    above = S[:k]
    libs = {where(f) for f in above}
    fns = " ".join(f["fn"] for f in above)
    ours = short(S[k]["fn"])
    if any(l.startswith("crossbeam") for l in libs):
        return ("channel internals", ours)
    if any(l.startswith(("parking_lot", "lock_api")) for l in libs):
        return ("lock internals", ours)
    if ATOMIC.search(fns):
        return ("atomic access", ours)
    if re.search(r"alloc::sync::Arc|drop_slow|Arc<", fns):
        return ("Arc reference count", ours)
    if "OnceLock" in fns or "once_lock" in fns or "sync::once" in fns:
        return ("OnceLock publication", ours)
    if "JoinInner" in fns or "JoinHandle" in fns:
        # The joined thread's result, read after pthread_join.
        return ("thread join", ours)
    if where(S[k]) == "test" and any("Supervisor::wait_for" in f["fn"] for f in S[k + 1:k + 3]):
        # A test's predicate, called by `wait_for` with the state Mutex held.
        return (LOCK, short(S[k + 1]["fn"]))
    for pattern, mechanism in TABLE:
        if re.search(pattern, ours):
            dropping = re.search(r"\bfree\b|dealloc|drop_in_place", fns)
            return (mechanism + (" (drop)" if dropping else ""), ours)
    for pattern, _why in REVIEWED:
        if re.search(pattern, ours):
            return ("reviewed by hand", ours)
    return ("UNATTRIBUTED", ours)

runs = [l.rstrip("\n").split("\t") for l in open(os.path.join(out, "runs.tsv"))]
unsafe_count = open(os.path.join(out, "unsafe.count")).read().strip() if os.path.exists(os.path.join(out, "unsafe.count")) else "?"
lines = ["# valgrind summary", "", f"`unsafe` in src/: {unsafe_count}", "",
         "| tool | binary | exit | seconds | tests | reports (occurrences) | distinct | suppressed |",
         "|---|---|---|---|---|---|---|---|"]
by_class = collections.defaultdict(lambda: collections.Counter())
by_class_fns = collections.defaultdict(collections.Counter)
unattributed = []
failed = False
for tool, b, rc, secs, result in runs:
    path = os.path.join(out, f"{tool}-{b}.xml")
    errs, counts = errors(path) if os.path.exists(path) else ([], {})
    total = sum(v for k, v in counts.items() if k != "__suppressed__")
    m = re.search(r"(\d+) passed; (\d+) failed", result)
    tests = f"{m.group(1)} passed, {m.group(2)} failed" if m else result
    lines.append(f"| {tool} | {b} | {rc} | {secs} | {tests} | "
                 f"{total} | {len(errs)} | {counts.get('__suppressed__', 0)} |")
    if rc not in ("0", "99") or " 0 failed" not in result:
        failed = True
    for e in errs:
        cls, detail = classify(e)
        by_class[cls][(tool, b)] += 1
        by_class_fns[cls][detail] += 1
        if cls == "UNATTRIBUTED":
            unattributed.append((tool, b, e))

lines += ["", "## Distinct reports by mechanism", "",
          "| mechanism | " + " | ".join(f"{t} {b}" for t, b, *_ in runs) + " | total |",
          "|---|" + "---|" * (len(runs) + 1)]
for cls in sorted(by_class):
    row = [str(by_class[cls][(t, b)]) for t, b, *_ in runs]
    lines.append(f"| {cls} | " + " | ".join(row) + f" | {sum(by_class[cls].values())} |")
lines += ["", "## Where, per mechanism (function of ours, or library)", ""]
for cls in sorted(by_class_fns):
    lines.append(f"* **{cls}**: " + ", ".join(f"`{f}` ({n})" for f, n in by_class_fns[cls].most_common()))
if unattributed:
    lines += ["", "## UNATTRIBUTED — read these", ""]
    for tool, b, e in unattributed:
        lines.append(f"### {tool} {b} {e['kind']}")
        for text, S in e["stacks"][:3]:
            lines.append(f"    {text}")
            for f in S[:14]:
                lines.append(f"      {f['fn'][:110]} ({f['file']}:{f['line']})")
summary = os.path.join(out, "summary.md")
open(summary, "w").write("\n".join(lines) + "\n")
print("\n".join(lines[:8 + len(runs) * 2 + 12]))
print(f"\nfull summary: {summary}")
if unattributed:
    print(f"FAILED: {len(unattributed)} report(s) not attributed to a known mechanism")
if failed:
    print("TESTS FAILED under valgrind (see the table; timing-bound tests can fail at "
          "valgrind's speed: read the .out files)")
sys.exit(1 if unattributed else 3 if failed else 0)
EOF
