//! Shaping in the skeleton: a delayed request is paused ([`Flow::Pause`]) and queued on its
//! worker; the root's tick ([`TICK`]) wakes what is due; a stream that ends while queued leaves the
//! queue and gives its slot back if it can ([`crate::shape`] says when).
//!
//! Failure modes: a give-back that cannot be written leaves the slot reserved (an idle gap, never
//! extra capacity), logged. A wake the skeleton cannot deliver ends the stream (the skeleton's
//! doing); its slot is past by then.

use crate::config::Config;
use crate::shape::{give_back, Queue, ShapeEvent, Shaping, TICK};
use palisade_core::plugin::{EventCounters, Flow, Metric, RootCx, Setup, StreamCx, Wake};
use palisade_core::{Decision, SharedStore};
use std::cell::RefCell;
use std::time::Duration;

/// Per shaping rule: its counters, `wait_ms` and the `waiting` gauge.
struct RuleMetrics {
    events: EventCounters<ShapeEvent>,
    wait_ms: Metric,
    waiting: Metric,
}

/// The worker's shaping state: the queue and the metrics of every rule that shapes.
pub(super) struct Shaper {
    queue: RefCell<Queue>,
    /// One per rule; `None` for a rule that does not shape.
    metrics: Vec<Option<RuleMetrics>>,
}

impl Shaper {
    /// `None` when no rule shapes: the limiter then runs exactly as without shaping.
    pub(super) fn new(config: &Config, setup: &Setup<'_>) -> Option<Shaper> {
        if config.rules.iter().all(|r| r.shapes.is_empty()) {
            return None;
        }
        let metrics = config
            .rules
            .iter()
            .map(|r| {
                (!r.shapes.is_empty()).then(|| RuleMetrics {
                    events: EventCounters::define(setup, &r.name),
                    wait_ms: setup.histogram(&format!("{}.wait_ms", r.name)),
                    waiting: setup.gauge(&format!("{}.waiting", r.name)),
                })
            })
            .collect();
        Some(Shaper {
            queue: RefCell::new(Queue::new(config.rules.iter().map(|r| &r.shapes[..]))),
            metrics,
        })
    }

    pub(super) fn tick_period(&self) -> Duration {
        TICK
    }

    /// Can limit `limit` of rule `rule` hold one more waiter on this worker?
    pub(super) fn has_room(&self, rule: usize, limit: usize) -> bool {
        self.queue
            .try_borrow()
            .is_ok_and(|q| q.has_room(rule, limit))
    }

    fn count(&self, rule: usize, event: ShapeEvent) {
        if let Some(Some(m)) = self.metrics.get(rule) {
            m.events.count(event);
        }
    }

    /// Each rule with a reservation in `shaping`, once.
    fn rules(shaping: &Shaping) -> Vec<usize> {
        let mut rules: Vec<usize> = shaping.reservations.iter().map(|r| r.rule).collect();
        rules.dedup();
        rules
    }

    fn waiting(&self, shaping: &Shaping, delta: i64) {
        for rule in Self::rules(shaping) {
            if let Some(Some(m)) = self.metrics.get(rule) {
                m.waiting.add(delta);
            }
        }
    }

    fn give_back_all(&self, store: &dyn SharedStore, shaping: &Shaping) {
        for r in &shaping.reservations {
            match give_back(store, r) {
                Ok(true) => self.count(r.rule, ShapeEvent::SlotReturned),
                Ok(false) => {}
                Err(e) => log::warn!(
                    "palisade {}: cannot give a reserved slot back ({e}); it stays unused",
                    super::PLUGIN
                ),
            }
        }
    }

    /// After the decision: pause a delayed request, or give back the slots of a refused one.
    pub(super) fn after(
        &self,
        cx: &StreamCx<'_>,
        store: &dyn SharedStore,
        shaping: Shaping,
        decision: Decision,
    ) -> Flow {
        for rule in &shaping.queue_full {
            self.count(*rule, ShapeEvent::QueueFull);
        }
        let reply = match decision {
            Decision::Reply(reply) => reply,
            Decision::Continue => {
                if shaping.departure().is_none() {
                    return Flow::Continue;
                }
                let Ok(mut queue) = self.queue.try_borrow_mut() else {
                    // Cannot happen (no re-entrance); let it go now rather than hold it forever.
                    return Flow::Continue;
                };
                for rule in Self::rules(&shaping) {
                    self.count(rule, ShapeEvent::Delayed);
                }
                self.waiting(&shaping, 1);
                queue.push(cx.context_id(), cx.now(), shaping);
                return Flow::Pause;
            }
        };
        // A later rule (or the rate limit service) limited it: it never waits.
        self.give_back_all(store, &shaping);
        Flow::reply_or_continue(reply)
    }

    /// The tick: wake every waiter whose slot has come, in order.
    pub(super) fn on_tick(&self, cx: &mut RootCx<'_>) {
        let now = cx.now();
        let due = match self.queue.try_borrow_mut() {
            Ok(mut q) if !q.is_empty() => q.due(now),
            _ => return,
        };
        for w in due {
            let waited = millis(now.saturating_since(w.arrived));
            for rule in Self::rules(&w.shaping) {
                self.count(rule, ShapeEvent::Released);
                if let Some(Some(m)) = self.metrics.get(rule) {
                    m.wait_ms.record(waited);
                }
            }
            self.waiting(&w.shaping, -1);
            cx.wake(Wake::Resume(w.context));
        }
    }

    /// The stream ended: if it was still waiting (in the queue, or for the rate limit service
    /// with slots `held`), it leaves and gives its slots back.
    pub(super) fn end(&self, context: u32, store: &dyn SharedStore, held: Shaping) {
        if !held.reservations.is_empty() {
            self.give_back_all(store, &held);
        }
        let waiter = match self.queue.try_borrow_mut() {
            Ok(mut q) => q.remove(context),
            Err(_) => None,
        };
        let Some(w) = waiter else { return };
        for rule in Self::rules(&w.shaping) {
            self.count(rule, ShapeEvent::Abandoned);
        }
        self.waiting(&w.shaping, -1);
        self.give_back_all(store, &w.shaping);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
