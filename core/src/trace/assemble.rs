//! Grouping spans that arrive spread over a stream (OTLP requests, Alibaba CSV rows) into
//! whole traces, with bounded memory when the stream is roughly sorted by time.
//!
//! Items accumulate per trace id. The stream's clock is the latest span end seen; a trace is
//! complete, and emitted, once the clock is `flush_after_us` past the trace's own latest span
//! end. The clock moves when the decoder says a batch is done ([`Assembler::flush`]; OTLP: after
//! each `resourceSpans`, whose spans come in no particular order) or with every item
//! ([`Assembler::push`]; time-sorted rows); [`Assembler::advance`] moves it by wall time (a
//! receiver whose traffic stops); [`Assembler::finish`] emits everything left. Traces are
//! emitted in order of their latest span end, so output is deterministic for a given input.
//!
//! A trace found bad while it is still open ([`Assembler::reject`]) is counted once, its items
//! are dropped at once, and later items for it are dropped until it would have been emitted.

use super::{Reason, Skips, Span};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Default time a trace stays open after its latest span end: 60 s.
pub const DEFAULT_FLUSH_AFTER_US: i64 = 60_000_000;

#[derive(Debug)]
struct Open<T> {
    items: Vec<T>,
    last_end: i64,
    rejected: bool,
}

/// Spans (or other per-trace items `T`) grouped by trace id; see the module docs.
#[derive(Debug)]
pub struct Assembler<T = Span> {
    flush_after_us: i64,
    /// The clock traces were last flushed against.
    clock: i64,
    /// The latest span end added.
    seen: i64,
    open: HashMap<String, Open<T>>,
    /// (last end when queued, trace id); stale entries are re-queued when popped.
    queue: BinaryHeap<Reverse<(i64, String)>>,
}

impl<T> Assembler<T> {
    /// `flush_after_us` as in [`super::Config::flush_after_us`]; 0 or less means the default.
    pub fn new(flush_after_us: i64) -> Self {
        let flush_after_us = if flush_after_us > 0 { flush_after_us } else { DEFAULT_FLUSH_AFTER_US };
        Assembler { flush_after_us, clock: i64::MIN, seen: i64::MIN, open: HashMap::new(), queue: BinaryHeap::new() }
    }

    /// Traces currently open.
    pub fn open_traces(&self) -> usize {
        self.open.len()
    }

    /// The stream's clock: the latest span end seen (or passed to [`Assembler::advance`]).
    pub fn clock(&self) -> Option<i64> {
        let clock = self.clock.max(self.seen);
        (clock > i64::MIN).then_some(clock)
    }

    /// Open `trace_id` if it is not open yet, and note its span ending at `end_us`.
    fn open(&mut self, trace_id: &str, end_us: i64) -> Option<&mut Open<T>> {
        if !self.open.contains_key(trace_id) {
            self.queue.push(Reverse((end_us, trace_id.to_owned())));
            let open = Open { items: Vec::new(), last_end: end_us, rejected: false };
            self.open.insert(trace_id.to_owned(), open);
        }
        self.seen = self.seen.max(end_us);
        let open = self.open.get_mut(trace_id)?;
        open.last_end = open.last_end.max(end_us);
        Some(open)
    }

    /// Add one item of `trace_id` whose span ends at `end_us`, without moving the clock.
    pub fn add(&mut self, trace_id: &str, end_us: i64, item: T) {
        if let Some(open) = self.open(trace_id, end_us)
            && !open.rejected
        {
            open.items.push(item);
        }
    }

    /// [`Assembler::add`], then [`Assembler::flush`]: for items that arrive in time order.
    pub fn push(&mut self, trace_id: &str, end_us: i64, item: T, emit: &mut dyn FnMut(String, Vec<T>)) {
        self.add(trace_id, end_us, item);
        self.flush(emit);
    }

    /// Drop `trace_id` as bad: count `reason` once (with `example`), drop its items now and
    /// any that arrive until it would have been emitted. `end_us`: the bad span's end, or
    /// [`Assembler::clock`] when it has none.
    pub fn reject(
        &mut self,
        trace_id: &str,
        end_us: i64,
        reason: Reason,
        example: impl FnOnce() -> String,
        skips: &mut Skips,
    ) {
        if let Some(open) = self.open(trace_id, end_us)
            && !open.rejected
        {
            open.rejected = true;
            open.items = Vec::new();
            skips.add(reason, example);
        }
    }

    /// Move the clock to the latest span end added and emit every trace it has passed.
    pub fn flush(&mut self, emit: &mut dyn FnMut(String, Vec<T>)) {
        self.advance(self.seen, emit);
    }

    /// Move the clock to `now_us` (if later) and emit every trace it has passed.
    pub fn advance(&mut self, now_us: i64, emit: &mut dyn FnMut(String, Vec<T>)) {
        self.clock = self.clock.max(now_us);
        if self.clock == i64::MIN {
            return;
        }
        let horizon = self.clock.saturating_sub(self.flush_after_us);
        while let Some(Reverse((end, _))) = self.queue.peek() {
            if *end > horizon {
                break;
            }
            let Some(Reverse((_, id))) = self.queue.pop() else {
                break;
            };
            self.pop_trace(id, Some(horizon), emit);
        }
    }

    /// Emit every open trace, in order of latest span end.
    pub fn finish(&mut self, emit: &mut dyn FnMut(String, Vec<T>)) {
        while let Some(Reverse((_, id))) = self.queue.pop() {
            self.pop_trace(id, None, emit);
        }
    }

    /// Emit `id` unless it has grown past `horizon` since it was queued (then re-queue it).
    fn pop_trace(&mut self, id: String, horizon: Option<i64>, emit: &mut dyn FnMut(String, Vec<T>)) {
        let Some(open) = self.open.get(&id) else {
            return;
        };
        if let Some(h) = horizon
            && open.last_end > h
        {
            let last_end = open.last_end;
            self.queue.push(Reverse((last_end, id)));
            return;
        }
        if let Some(open) = self.open.remove(&id)
            && !open.rejected
        {
            emit(id, open.items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(out: &mut Vec<(String, Vec<u32>)>) -> impl FnMut(String, Vec<u32>) + '_ {
        |id, items| out.push((id, items))
    }

    #[test]
    fn emits_when_clock_passes_and_on_finish() {
        let mut a = Assembler::<u32>::new(100);
        let mut out = Vec::new();
        a.push("t1", 10, 1, &mut collect(&mut out));
        a.push("t2", 50, 2, &mut collect(&mut out));
        a.push("t1", 60, 3, &mut collect(&mut out));
        assert!(out.is_empty());
        // Clock 155: t1 (last end 60) is 95 behind, not yet; t2 (50) is 105 behind.
        a.push("t3", 155, 4, &mut collect(&mut out));
        assert_eq!(out, vec![("t2".to_owned(), vec![2])]);
        a.push("t3", 161, 5, &mut collect(&mut out));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], ("t1".to_owned(), vec![1, 3]));
        assert_eq!(a.open_traces(), 1);
        a.finish(&mut collect(&mut out));
        assert_eq!(out[2], ("t3".to_owned(), vec![4, 5]));
        assert_eq!(a.open_traces(), 0);
    }

    #[test]
    fn rejected_traces_count_once_and_vanish() {
        let mut a = Assembler::<u32>::new(0);
        let mut skips = Skips::default();
        let mut out = Vec::new();
        a.push("t1", 10, 1, &mut collect(&mut out));
        a.reject("t1", 10, Reason::NoService, || "t1".into(), &mut skips);
        a.reject("t1", 20, Reason::NoService, || "t1".into(), &mut skips);
        a.push("t1", 30, 2, &mut collect(&mut out));
        a.push("t2", 30, 3, &mut collect(&mut out));
        a.advance(30 + DEFAULT_FLUSH_AFTER_US, &mut collect(&mut out));
        assert_eq!(out, vec![("t2".to_owned(), vec![3])]);
        assert_eq!(skips.count(Reason::NoService), 1);
        a.finish(&mut collect(&mut out));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn added_items_wait_for_a_flush() {
        let mut a = Assembler::<u32>::new(10);
        let mut out = Vec::new();
        a.add("late", 1_000, 1);
        a.add("early", 5, 2);
        a.add("late", 3, 3);
        assert_eq!(a.clock(), Some(1_000));
        assert!(out.is_empty());
        a.flush(&mut collect(&mut out));
        assert_eq!(out, vec![("early".to_owned(), vec![2])]);
        a.finish(&mut collect(&mut out));
        assert_eq!(out[1], ("late".to_owned(), vec![1, 3]));
    }
}
