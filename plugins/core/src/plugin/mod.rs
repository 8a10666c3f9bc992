//! The plugin skeleton: what every Palisade module shares, written once and tested natively.
//!
//! Layers, from the proxy inwards:
//! 1. `palisade-host` implements [`Host`] on the proxy-wasm ABI and adapts the SDK's root and
//!    HTTP contexts to [`runtime::Runtime`] and [`runtime::Chain`]; `palisade_host::export!`
//!    turns a list of [`Kind`]s into a module's entry point (`main!`).
//! 2. [`runtime`] is the generic root and stream: config loading, ticks, call routing, pausing
//!    and waking, replies, the ordered chain of policies.
//! 3. Each plugin crate implements [`Policy`] / [`StreamPolicy`] over its pure decision code, and
//!    names itself with one [`Kind`].
//!
//! A standalone module is a chain of one. The `palisade` module is a chain of any of them, from
//! one config: `{"chain": [{"jwt_auth": {...}}, {"rate_limit": {...}}]}`.

pub mod host;
pub mod policy;
pub mod runtime;

#[cfg(test)]
mod tests;

pub use host::{GrpcCall, Host, HostError, HostRef, HostStore, Metric};
pub use policy::{
    CallResponse, Flow, GrpcResponse, OnReplyFailure, Policy, RootCx, StreamCx, StreamPolicy, Wake,
};

use crate::config::{parse_json, FieldPath};
use crate::store::KeyPrefix;
use crate::ConfigError;
use serde_json::{Map, Value};
use std::rc::Rc;

/// Builds a policy from its JSON config.
pub type BuildFn = fn(&[u8], &Setup<'_>) -> Result<Box<dyn Policy>, ConfigError>;

/// A plugin kind: its name (the chain key, the metric and shared-data namespace) and how to build
/// its policy from that policy's own JSON config.
#[derive(Clone, Copy)]
pub struct Kind {
    pub name: &'static str,
    pub build: BuildFn,
}

/// What a policy gets while it is built: the host, and its own namespaces for shared data and
/// metrics.
pub struct Setup<'a> {
    host: &'a HostRef,
    kind: &'static str,
    instance: &'a str,
    /// How many policies of the same kind come before this one in the chain.
    occurrence: usize,
}

impl<'a> Setup<'a> {
    pub fn new(
        host: &'a HostRef,
        kind: &'static str,
        instance: &'a str,
        occurrence: usize,
    ) -> Self {
        Setup {
            host,
            kind,
            instance,
            occurrence,
        }
    }

    pub fn host(&self) -> &HostRef {
        self.host
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The shared-data namespace of this policy instance:
    /// `palisade/<kind>/<instance>/<scope>/`, where `<instance>` is the plugin's name (Envoy's
    /// `plugin_name`; Istio's `<namespace>.<name>`, since Istio sets no `vm_id` and every plugin
    /// of a proxy shares one shared-data space), with `#2`, `#3`… for a second and third policy of
    /// the same kind in one chain. Reloads of one plugin keep their state; two plugins never share.
    pub fn store(&self, scope: &str) -> HostStore {
        HostStore::new(self.host, KeyPrefix::new(self.kind, &self.namespace(scope)))
    }

    /// One value per rule, in rule order, each made by `define` with this setup: a policy's
    /// per-rule metrics (`metrics[i]` is rule `i`'s), named under the rule.
    pub fn per_rule<R, M>(&self, rules: &[R], define: impl Fn(&Self, &R) -> M) -> Vec<M> {
        rules.iter().map(|r| define(self, r)).collect()
    }

    /// Log, at configure, how many rules a policy with shared data runs and where its state
    /// lives, then each of its config's deprecation warnings.
    pub fn log_configured(&self, rules: usize, store: &HostStore, warnings: &[String]) {
        log::info!(
            "palisade {}: configured {rules} rule(s), shared data under {}",
            self.kind,
            store.prefix().as_str()
        );
        for w in warnings {
            log::warn!("palisade {}: {w}", self.kind);
        }
    }

    fn namespace(&self, scope: &str) -> String {
        let instance = if self.instance.is_empty() {
            "_"
        } else {
            self.instance
        };
        if self.occurrence == 0 {
            format!("{instance}/{scope}")
        } else {
            format!("{instance}#{}/{scope}", self.occurrence + 1)
        }
    }

    /// The prefix of this policy's metric names: `palisade.<kind>`, or `palisade.<kind>_2` for a
    /// second policy of the same kind in one chain (so two instances never share a counter).
    pub fn metric_prefix(&self) -> String {
        if self.occurrence == 0 {
            format!("palisade.{}", self.kind)
        } else {
            format!("palisade.{}_{}", self.kind, self.occurrence + 1)
        }
    }

    /// `<prefix>.<name>`, a counter.
    pub fn counter(&self, name: &str) -> Metric {
        Metric::counter(self.host, &format!("{}.{name}", self.metric_prefix()))
    }

    pub fn gauge(&self, name: &str) -> Metric {
        Metric::gauge(self.host, &format!("{}.{name}", self.metric_prefix()))
    }

    pub fn histogram(&self, name: &str) -> Metric {
        Metric::histogram(self.host, &format!("{}.{name}", self.metric_prefix()))
    }
}

/// Build a standalone module's one stage from its config.
pub fn load_one(
    host: &HostRef,
    kind: &Kind,
    bytes: &[u8],
    instance: &str,
) -> Result<Rc<runtime::Runtime>, ConfigError> {
    let setup = Setup::new(host, kind.name, instance, 0);
    let policy = (kind.build)(bytes, &setup)?;
    Ok(runtime::Runtime::new(
        Rc::clone(host),
        kind.name,
        vec![runtime::Stage {
            kind: kind.name,
            policy,
        }],
    ))
}

crate::wire! {
    struct ChainWire {
        chain: Vec<Map<String, Value>>,
    }
}

/// Most policies in one chain.
pub const MAX_CHAIN: usize = 16;

/// Build the chain module's stages: `{"chain": [{"<kind>": {config}}, ...]}`. Every entry is
/// validated by its own policy's parser, and its errors name the full path
/// (`chain[1].rate_limit.rules[0].limits[0].capacity`).
pub fn load_chain(
    host: &HostRef,
    kinds: &[Kind],
    bytes: &[u8],
    instance: &str,
) -> Result<Rc<runtime::Runtime>, ConfigError> {
    let wire: ChainWire = parse_json(bytes)?;
    let root = FieldPath::root().field("chain");
    if wire.chain.is_empty() {
        return Err(root.missing("the chain needs at least one policy"));
    }
    if wire.chain.len() > MAX_CHAIN {
        return Err(root.out_of_range(wire.chain.len(), 1, MAX_CHAIN));
    }
    let mut stages = Vec::with_capacity(wire.chain.len());
    for (i, entry) in wire.chain.iter().enumerate() {
        let at = root.index(i);
        let mut fields = entry.iter();
        let (Some((name, config)), None) = (fields.next(), fields.next()) else {
            return Err(at.invalid(
                entry.keys().cloned().collect::<Vec<_>>().join(", "),
                "each chain entry is an object with exactly one key, the policy's name, e.g. {\"rate_limit\": {...}}",
            ));
        };
        let Some(kind) = kinds.iter().find(|k| k.name == name) else {
            let known: Vec<&str> = kinds.iter().map(|k| k.name).collect();
            return Err(at.field(name).invalid(
                name,
                format!("unknown policy; expected one of `{}`", known.join("`, `")),
            ));
        };
        let occurrence = stages
            .iter()
            .filter(|s: &&runtime::Stage| s.kind == kind.name)
            .count();
        let setup = Setup::new(host, kind.name, instance, occurrence);
        let bytes = serde_json::to_vec(config)
            .map_err(|e| at.field(name).invalid("(config)", e.to_string()))?;
        let policy = (kind.build)(&bytes, &setup).map_err(|e| e.within(&at.field(name)))?;
        stages.push(runtime::Stage {
            kind: kind.name,
            policy,
        });
    }
    Ok(runtime::Runtime::new(Rc::clone(host), "palisade", stages))
}

/// An enum of per-rule events, each counted in its own metric: the one place a plugin declares
/// its metric names (`NAMES[e.index()]` is the metric of event `e`).
pub trait MetricEvent: Copy {
    const NAMES: &'static [&'static str];
    fn index(self) -> usize;
}

/// One counter per event of `E` for one rule: `<prefix>.<rule>.<name>`.
pub struct EventCounters<E: MetricEvent> {
    metrics: Vec<Metric>,
    _events: std::marker::PhantomData<E>,
}

impl<E: MetricEvent> EventCounters<E> {
    pub fn define(setup: &Setup<'_>, rule: &str) -> Self {
        EventCounters {
            metrics: E::NAMES
                .iter()
                .map(|name| setup.counter(&format!("{rule}.{name}")))
                .collect(),
            _events: std::marker::PhantomData,
        }
    }

    pub fn count(&self, event: E) {
        if let Some(m) = self.metrics.get(event.index()) {
            m.inc();
        }
    }

    pub fn metric(&self, event: E) -> Option<&Metric> {
        self.metrics.get(event.index())
    }
}
