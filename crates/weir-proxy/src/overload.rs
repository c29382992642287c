//! Envoy's overload manager (a bootstrap's `overload_manager`): resource monitors measured every
//! `refresh_interval`, triggers that turn a monitor's pressure into an action's state (0 to 1),
//! and the actions the data path consults.
//!
//! Monitors: `envoy.resource_monitors.fixed_heap` (the process's resident memory against
//! `max_heap_size_bytes`: with mimalloc, memory freed but not yet given back stays resident, and
//! giving it back is what `shrink_heap` does), `envoy.resource_monitors.injected_resource` (a
//! pressure read from a file, as Envoy offers for tests and drills) and
//! `envoy.resource_monitors.global_downstream_max_connections` (a limit enforced when a
//! connection is accepted; see [`crate::connection_limits`]). Actions:
//! `stop_accepting_requests` (503 `envoy overloaded`, to a share of requests equal to the
//! action's state), `reject_incoming_connections` (a connection closed as it is accepted, in the
//! same share), `stop_accepting_connections` (listeners stop accepting while saturated; the
//! kernel queues what arrives), `disable_http_keepalive` (a connection closed after a response:
//! `connection: close` for HTTP/1, a GOAWAY for HTTP/2, in that share) and `shrink_heap` (free
//! memory given back to the system every `timer_interval` while saturated); the load shed points
//! `tcp_listener_accept` and `http_connection_manager_decode_headers` shed connections and
//! requests as the first two actions do. Anything else is refused by name.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::overload::v3::{
    OverloadManager, ShrinkHeapConfig, resource_monitor, trigger,
};
use envoy_types::pb::envoy::extensions::resource_monitors::downstream_connections::v3::DownstreamConnectionsConfig;
use envoy_types::pb::envoy::extensions::resource_monitors::fixed_heap::v3::FixedHeapConfig;
use envoy_types::pb::envoy::extensions::resource_monitors::injected_resource::v3::InjectedResourceConfig;

use crate::convert::{decode_any, opt_duration};

/// What the proxy can ask of the allocator its binary chose.
#[derive(Clone, Copy, Debug)]
pub struct HeapControl {
    /// Gives memory freed by the program but still held by the allocator back to the system.
    pub release: fn(),
}

/// An overload action or load shed point Weir takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `envoy.overload_actions.stop_accepting_requests`.
    StopAcceptingRequests,
    /// `envoy.overload_actions.stop_accepting_connections`.
    StopAcceptingConnections,
    /// `envoy.overload_actions.reject_incoming_connections`.
    RejectIncomingConnections,
    /// `envoy.overload_actions.shrink_heap`.
    ShrinkHeap,
    /// `envoy.overload_actions.disable_http_keepalive`.
    DisableHttpKeepalive,
    /// The load shed point `envoy.load_shed_points.tcp_listener_accept`: a new connection is
    /// closed.
    ShedListenerAccept,
    /// The load shed point `envoy.load_shed_points.http_connection_manager_decode_headers`: a
    /// new request is answered `503`.
    ShedDecodeHeaders,
}

/// How many there are (the size of the state tables).
const ACTIONS: usize = 7;

impl Action {
    /// The overload actions (configured under `actions`).
    const OVERLOAD_ACTIONS: [Action; 5] = [
        Action::StopAcceptingRequests,
        Action::StopAcceptingConnections,
        Action::RejectIncomingConnections,
        Action::ShrinkHeap,
        Action::DisableHttpKeepalive,
    ];

    /// The load shed points (configured under `loadshed_points`).
    const LOAD_SHED_POINTS: [Action; 2] = [Action::ShedListenerAccept, Action::ShedDecodeHeaders];

    /// Envoy's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Action::StopAcceptingRequests => "envoy.overload_actions.stop_accepting_requests",
            Action::StopAcceptingConnections => "envoy.overload_actions.stop_accepting_connections",
            Action::RejectIncomingConnections => "envoy.overload_actions.reject_incoming_connections",
            Action::ShrinkHeap => "envoy.overload_actions.shrink_heap",
            Action::DisableHttpKeepalive => "envoy.overload_actions.disable_http_keepalive",
            Action::ShedListenerAccept => "envoy.load_shed_points.tcp_listener_accept",
            Action::ShedDecodeHeaders => "envoy.load_shed_points.http_connection_manager_decode_headers",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn is_load_shed_point(self) -> bool {
        Self::LOAD_SHED_POINTS.contains(&self)
    }
}

/// A resource monitor measured every refresh.
#[derive(Clone, Debug, PartialEq)]
enum Monitor {
    /// Resident memory against this many bytes.
    FixedHeap(u64),
    /// The pressure written in this file.
    Injected(PathBuf),
}

/// How a monitor's pressure sets an action's state.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trigger {
    /// 1 from this pressure on, else 0.
    Threshold(f64),
    /// 0 up to `scaling`, 1 from `saturation` on, linear between.
    Scaled { scaling: f64, saturation: f64 },
}

impl Trigger {
    fn state(self, pressure: f64) -> f64 {
        match self {
            Trigger::Threshold(value) => {
                if pressure >= value {
                    1.0
                } else {
                    0.0
                }
            }
            Trigger::Scaled { scaling, saturation } => {
                if pressure <= scaling {
                    0.0
                } else if pressure >= saturation {
                    1.0
                } else {
                    (pressure - scaling) / (saturation - scaling)
                }
            }
        }
    }
}

/// An action and what triggers it (monitor index, trigger).
#[derive(Clone, Debug, PartialEq)]
struct ActionConfig {
    action: Action,
    triggers: Vec<(usize, Trigger)>,
}

/// A compiled `overload_manager`.
#[derive(Clone, Debug, PartialEq)]
pub struct OverloadConfig {
    /// How often the monitors are measured (Envoy's default 1 s).
    pub refresh_interval: Duration,
    /// The downstream connections monitor's limit, if configured.
    pub max_downstream_connections: Option<u64>,
    /// How often `shrink_heap` gives memory back while saturated (Envoy's default 10 s).
    pub shrink_interval: Duration,
    monitors: Vec<(String, Monitor)>,
    actions: Vec<ActionConfig>,
}

impl OverloadConfig {
    /// Compiles an overload manager, with Envoy's checks and words.
    pub fn compile(o: &OverloadManager) -> Result<Self, String> {
        if o.buffer_factory_config.is_some() {
            return Err("overload_manager.buffer_factory_config is not supported".into());
        }
        let refresh_interval =
            opt_duration(o.refresh_interval.as_ref(), "refresh_interval")?.unwrap_or(Duration::from_secs(1));
        if refresh_interval.is_zero() {
            return Err("overload_manager.refresh_interval must be above 0".into());
        }
        let mut monitors: Vec<(String, Monitor)> = Vec::new();
        let mut max_downstream_connections = None;
        let mut downstream_monitor: Option<&str> = None;
        let mut seen: Vec<&str> = Vec::new();
        for m in &o.resource_monitors {
            if seen.contains(&m.name.as_str()) {
                return Err(format!("Duplicate resource monitor {}", m.name));
            }
            seen.push(&m.name);
            let Some(resource_monitor::ConfigType::TypedConfig(any)) = &m.config_type else {
                return Err(format!("resource monitor {}: typed_config is required", m.name));
            };
            let kind = any.type_url.rsplit('/').next().unwrap_or_default();
            match kind {
                "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig" => {
                    let c: FixedHeapConfig = decode_any(any, kind, &m.name)?;
                    if c.max_heap_size_bytes_runtime.is_some() {
                        return Err(format!(
                            "resource monitor {}: max_heap_size_bytes_runtime is not supported",
                            m.name
                        ));
                    }
                    if c.max_heap_size_bytes == 0 {
                        return Err(format!(
                            "resource monitor {}: max_heap_size_bytes must be above 0",
                            m.name
                        ));
                    }
                    monitors.push((m.name.clone(), Monitor::FixedHeap(c.max_heap_size_bytes)));
                }
                "envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig" => {
                    let c: InjectedResourceConfig = decode_any(any, kind, &m.name)?;
                    if c.filename.is_empty() {
                        return Err(format!("resource monitor {}: filename is required", m.name));
                    }
                    monitors.push((m.name.clone(), Monitor::Injected(PathBuf::from(c.filename))));
                }
                "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig" => {
                    let c: DownstreamConnectionsConfig = decode_any(any, kind, &m.name)?;
                    let max = u64::try_from(c.max_active_downstream_connections)
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            format!(
                                "resource monitor {}: max_active_downstream_connections must be above 0",
                                m.name
                            )
                        })?;
                    max_downstream_connections = Some(max);
                    downstream_monitor = Some(&m.name);
                }
                other => return Err(format!("resource monitor {} ({other}) is not supported", m.name)),
            }
        }
        let mut actions: Vec<ActionConfig> = Vec::new();
        let mut shrink_interval = Duration::from_secs(10);
        for point in &o.loadshed_points {
            let action = Action::LOAD_SHED_POINTS
                .into_iter()
                .find(|x| x.name() == point.name)
                .ok_or_else(|| format!("load shed point {} is not supported", point.name))?;
            if actions.iter().any(|x| x.action == action) {
                return Err(format!("Duplicate loadshed point {}", point.name));
            }
            let triggers = compile_triggers(&point.name, &point.triggers, &monitors, downstream_monitor)?;
            actions.push(ActionConfig { action, triggers });
        }
        for a in &o.actions {
            let action = Action::OVERLOAD_ACTIONS
                .into_iter()
                .find(|x| x.name() == a.name)
                .ok_or_else(|| format!("overload action {} is not supported", a.name))?;
            if actions.iter().any(|x| x.action == action) {
                return Err(format!("Duplicate overload action {}", a.name));
            }
            match (&a.typed_config, action) {
                (None, _) => {}
                (Some(any), Action::ShrinkHeap) => {
                    let c: ShrinkHeapConfig =
                        decode_any(any, "envoy.config.overload.v3.ShrinkHeapConfig", &a.name)?;
                    if c.max_unfreed_memory_bytes.is_some() {
                        return Err(format!(
                            "overload action {}: max_unfreed_memory_bytes is not supported",
                            a.name
                        ));
                    }
                    if let Some(t) = opt_duration(c.timer_interval.as_ref(), "timer_interval")? {
                        if t.is_zero() {
                            return Err(format!(
                                "overload action {}: timer_interval must be above 0",
                                a.name
                            ));
                        }
                        shrink_interval = t;
                    }
                }
                (Some(_), _) => {
                    return Err(format!(
                        "overload action {}: typed_config is not supported",
                        a.name
                    ));
                }
            }
            let triggers = compile_triggers(&a.name, &a.triggers, &monitors, downstream_monitor)?;
            actions.push(ActionConfig { action, triggers });
        }
        Ok(OverloadConfig {
            refresh_interval,
            max_downstream_connections,
            shrink_interval,
            monitors,
            actions,
        })
    }

    /// Whether a monitor needs the process's memory figure (fixed_heap).
    pub fn measures_memory(&self) -> bool {
        self.monitors
            .iter()
            .any(|(_, m)| matches!(m, Monitor::FixedHeap(_)))
    }

    /// Whether an action is configured.
    pub fn has(&self, action: Action) -> bool {
        self.actions.iter().any(|a| a.action == action)
    }
}

/// The triggers of the action or load shed point `owner`: each names a monitor of `monitors`
/// (by index), once; Envoy's checks and words.
fn compile_triggers(
    owner: &str,
    triggers: &[envoy_types::pb::envoy::config::overload::v3::Trigger],
    monitors: &[(String, Monitor)],
    downstream_monitor: Option<&str>,
) -> Result<Vec<(usize, Trigger)>, String> {
    let mut compiled: Vec<(usize, Trigger)> = Vec::new();
    for t in triggers {
        if downstream_monitor == Some(t.name.as_str()) {
            return Err(format!(
                "overload action {owner}: the downstream connections monitor limits connections itself and cannot trigger an action"
            ));
        }
        let Some(index) = monitors.iter().position(|(n, _)| *n == t.name) else {
            return Err(format!("Unknown trigger resource {}", t.name));
        };
        if compiled.iter().any(|(i, _)| *i == index) {
            return Err(format!("Duplicate trigger resource for overload action {owner}"));
        }
        let trigger = match &t.trigger_oneof {
            Some(trigger::TriggerOneof::Threshold(th)) => {
                if !(0.0..=1.0).contains(&th.value) {
                    return Err(format!(
                        "overload action {owner}: threshold value must be within [0, 1]"
                    ));
                }
                Trigger::Threshold(th.value)
            }
            Some(trigger::TriggerOneof::Scaled(s)) => {
                let in_range = (0.0..=1.0).contains(&s.scaling_threshold)
                    && (0.0..=1.0).contains(&s.saturation_threshold);
                if !in_range {
                    return Err(format!(
                        "overload action {owner}: scaled thresholds must be within [0, 1]"
                    ));
                }
                if s.scaling_threshold >= s.saturation_threshold {
                    return Err("scaling_threshold must be less than saturation_threshold".into());
                }
                Trigger::Scaled {
                    scaling: s.scaling_threshold,
                    saturation: s.saturation_threshold,
                }
            }
            None => return Err(format!("overload action {owner}: trigger {} has no kind", t.name)),
        };
        compiled.push((index, trigger));
    }
    Ok(compiled)
}

/// The overload state the data path reads: each action's state, and each monitor's last
/// pressure for the statistics.
#[derive(Debug)]
pub struct Overload {
    /// Each action's state (the bits of an `f64` in [0, 1]), by [`Action::index`].
    states: [AtomicU64; ACTIONS],
    /// How often each load shed point shed load (`shed_load_count`), by [`Action::index`].
    shed: [AtomicU64; ACTIONS],
    /// Which actions are configured (only they are reported).
    configured: Vec<Action>,
    /// Each monitor's name, last pressure (`f64` bits) and failed measurements.
    monitors: Vec<(String, AtomicU64, AtomicU64)>,
    /// Times memory was given back by `shrink_heap`.
    shrinks: AtomicU64,
    /// False while `stop_accepting_connections` is saturated.
    accepting: tokio::sync::watch::Sender<bool>,
    /// The configured actions, a bit each by [`Action::index`]: asked for every request and
    /// connection, an action nobody configured is answered without touching shared state.
    configured_bits: u8,
}

impl Default for Overload {
    fn default() -> Self {
        Overload::new(None)
    }
}

impl Overload {
    /// The state for a configuration (no overload manager: no action ever applies).
    pub fn new(config: Option<&OverloadConfig>) -> Self {
        Overload {
            states: Default::default(),
            shed: Default::default(),
            configured: config.map_or_else(Vec::new, |c| c.actions.iter().map(|a| a.action).collect()),
            monitors: config.map_or_else(Vec::new, |c| {
                c.monitors
                    .iter()
                    .map(|(n, _)| (n.clone(), AtomicU64::new(0), AtomicU64::new(0)))
                    .collect()
            }),
            shrinks: AtomicU64::new(0),
            accepting: tokio::sync::watch::channel(true).0,
            configured_bits: config.map_or(0, |c| {
                c.actions.iter().fold(0, |bits, a| bits | 1 << a.action.index())
            }),
        }
    }

    /// An action's state: 0 inactive, 1 saturated, between when scaled.
    pub fn state(&self, action: Action) -> f64 {
        f64::from_bits(self.states[action.index()].load(Ordering::Relaxed))
    }

    /// Whether this request or connection is shed by `action`: always when it is saturated,
    /// with a probability equal to its state when scaled (as Envoy draws it).
    pub fn sheds(&self, action: Action) -> bool {
        if self.configured_bits & 1 << action.index() == 0 {
            return false;
        }
        let state = self.state(action);
        let sheds = state >= 1.0 || state > 0.0 && fastrand::f64() < state;
        if sheds && action.is_load_shed_point() {
            self.shed[action.index()].fetch_add(1, Ordering::Relaxed);
        }
        sheds
    }

    /// Whether a new request is answered `503` here: `stop_accepting_requests`, or the load
    /// shed point `http_connection_manager_decode_headers`.
    pub fn sheds_request(&self) -> bool {
        self.sheds(Action::StopAcceptingRequests) || self.sheds(Action::ShedDecodeHeaders)
    }

    /// Whether a new connection is closed as it is accepted: `reject_incoming_connections`, or
    /// the load shed point `tcp_listener_accept`.
    pub fn sheds_connection(&self) -> bool {
        self.sheds(Action::RejectIncomingConnections) || self.sheds(Action::ShedListenerAccept)
    }

    /// Waits until listeners may accept (immediately unless `stop_accepting_connections` is
    /// saturated).
    pub async fn accepting(&self) {
        if self.state(Action::StopAcceptingConnections) < 1.0 {
            return;
        }
        let mut accepting = self.accepting.subscribe();
        let _ = accepting.wait_for(|ok| *ok).await;
    }

    /// Sets each configured action's state from the monitors' pressures (`None`: that monitor
    /// could not be measured this time, and its triggers keep their state).
    fn update(&self, config: &OverloadConfig, pressures: &[Option<f64>]) {
        for ((_, last, failed), pressure) in self.monitors.iter().zip(pressures) {
            match pressure {
                Some(p) => last.store(p.to_bits(), Ordering::Relaxed),
                None => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for a in &config.actions {
            let state = a
                .triggers
                .iter()
                .map(|(i, t)| {
                    let pressure = f64::from_bits(self.monitors[*i].1.load(Ordering::Relaxed));
                    t.state(pressure)
                })
                .fold(0.0, f64::max);
            self.states[a.action.index()].store(state.to_bits(), Ordering::Relaxed);
        }
        let accepting = self.state(Action::StopAcceptingConnections) < 1.0;
        self.accepting.send_if_modified(|ok| {
            let changed = *ok != accepting;
            *ok = accepting;
            changed
        });
    }

    /// Statistics in Envoy's names: (`/stats` name, value) — each monitor's `pressure`
    /// (percent) and `failed_updates`, each action's `active` (1 when saturated) and
    /// `scale_percent`, and `shrink_heap`'s `shrink_count`.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (name, pressure, failed) in &self.monitors {
            let pressure = (f64::from_bits(pressure.load(Ordering::Relaxed)) * 100.0).round() as u64;
            for (stat, value) in [
                ("pressure", pressure),
                ("failed_updates", failed.load(Ordering::Relaxed)),
            ] {
                out.push((format!("overload.{name}.{stat}"), value));
            }
        }
        for action in &self.configured {
            let state = self.state(*action);
            let scale_percent = ("scale_percent", (state * 100.0).round() as u64);
            let mut stats = if action.is_load_shed_point() {
                vec![
                    scale_percent,
                    (
                        "shed_load_count",
                        self.shed[action.index()].load(Ordering::Relaxed),
                    ),
                ]
            } else {
                vec![("active", u64::from(state >= 1.0)), scale_percent]
            };
            if *action == Action::ShrinkHeap {
                stats.push(("shrink_count", self.shrinks.load(Ordering::Relaxed)));
            }
            for (stat, value) in stats {
                out.push((format!("overload.{}.{stat}", action.name()), value));
            }
        }
        out
    }
}

/// The process's resident memory in bytes (Linux: `/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A pressure written in a file (the injected resource monitor): a number, 0 to 1.
fn injected_pressure(file: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    let pressure: f64 = text.trim().parse().ok()?;
    (pressure.is_finite() && pressure >= 0.0).then_some(pressure)
}

/// Measures the monitors every refresh interval and updates the actions; gives memory back
/// while `shrink_heap` is saturated. Runs until the proxy stops.
pub async fn run(overload: Arc<Overload>, config: OverloadConfig, heap: Option<HeapControl>) {
    let mut refresh = tokio::time::interval(config.refresh_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_shrink: Option<tokio::time::Instant> = None;
    loop {
        refresh.tick().await;
        let pressures: Vec<Option<f64>> = config
            .monitors
            .iter()
            .map(|(_, m)| match m {
                Monitor::FixedHeap(max) => resident_bytes().map(|b| b as f64 / *max as f64),
                Monitor::Injected(file) => injected_pressure(file),
            })
            .collect();
        overload.update(&config, &pressures);
        if let Some(heap) = heap
            && overload.state(Action::ShrinkHeap) >= 1.0
            && last_shrink.is_none_or(|t| t.elapsed() >= config.shrink_interval)
        {
            (heap.release)();
            overload.shrinks.fetch_add(1, Ordering::Relaxed);
            last_shrink = Some(tokio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::overload::v3::{
        OverloadAction, ResourceMonitor, ScaledTrigger, ThresholdTrigger, Trigger as PbTrigger,
    };
    use prost::Message;

    fn any<M: Message>(type_name: &str, m: &M) -> envoy_types::pb::google::protobuf::Any {
        envoy_types::pb::google::protobuf::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: m.encode_to_vec(),
        }
    }

    fn injected(name: &str) -> ResourceMonitor {
        ResourceMonitor {
            name: name.into(),
            config_type: Some(resource_monitor::ConfigType::TypedConfig(any(
                "envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig",
                &InjectedResourceConfig {
                    filename: "/dev/null".into(),
                },
            ))),
        }
    }

    fn action(name: &str, triggers: Vec<PbTrigger>) -> OverloadAction {
        OverloadAction {
            name: name.into(),
            triggers,
            typed_config: None,
        }
    }

    fn threshold(monitor: &str, value: f64) -> PbTrigger {
        PbTrigger {
            name: monitor.into(),
            trigger_oneof: Some(trigger::TriggerOneof::Threshold(ThresholdTrigger { value })),
        }
    }

    fn scaled(monitor: &str, scaling: f64, saturation: f64) -> PbTrigger {
        PbTrigger {
            name: monitor.into(),
            trigger_oneof: Some(trigger::TriggerOneof::Scaled(ScaledTrigger {
                scaling_threshold: scaling,
                saturation_threshold: saturation,
            })),
        }
    }

    #[test]
    fn actions_take_the_highest_state_their_triggers_give() {
        let o = OverloadManager {
            resource_monitors: vec![injected("a"), injected("b")],
            actions: vec![
                action(
                    Action::StopAcceptingRequests.name(),
                    vec![threshold("a", 0.9), scaled("b", 0.5, 0.7)],
                ),
                action(
                    Action::StopAcceptingConnections.name(),
                    vec![threshold("b", 0.95)],
                ),
            ],
            ..Default::default()
        };
        let config = OverloadConfig::compile(&o).unwrap();
        let overload = Overload::new(Some(&config));
        overload.update(&config, &[Some(0.2), Some(0.6)]);
        assert!((overload.state(Action::StopAcceptingRequests) - 0.5).abs() < 1e-9);
        assert_eq!(overload.state(Action::StopAcceptingConnections), 0.0);
        overload.update(&config, &[Some(0.9), Some(0.6)]);
        assert_eq!(overload.state(Action::StopAcceptingRequests), 1.0);
        assert!(overload.sheds(Action::StopAcceptingRequests));
        // A monitor that cannot be measured keeps its last pressure, and the failure counts.
        overload.update(&config, &[None, Some(0.96)]);
        assert_eq!(overload.state(Action::StopAcceptingRequests), 1.0);
        assert_eq!(overload.state(Action::StopAcceptingConnections), 1.0);
        assert!(!*overload.accepting.borrow());
        overload.update(&config, &[Some(0.0), Some(0.0)]);
        assert_eq!(overload.state(Action::StopAcceptingRequests), 0.0);
        assert!(!overload.sheds(Action::StopAcceptingRequests));
        assert!(*overload.accepting.borrow());
        let stats = overload.stats();
        let get = |n: &str| stats.iter().find(|(s, _)| s == n).map(|(_, v)| *v);
        assert_eq!(get("overload.a.failed_updates"), Some(1));
        assert_eq!(
            get("overload.envoy.overload_actions.stop_accepting_requests.active"),
            Some(0)
        );
        assert_eq!(
            get("overload.envoy.overload_actions.stop_accepting_connections.scale_percent"),
            Some(0)
        );
    }

    #[test]
    fn an_action_nobody_configured_never_sheds() {
        let overload = Overload::default();
        overload.states[Action::StopAcceptingRequests.index()].store(1f64.to_bits(), Ordering::Relaxed);
        assert!(!overload.sheds(Action::StopAcceptingRequests));
    }

    #[test]
    fn a_scaled_action_sheds_about_its_share() {
        let o = OverloadManager {
            resource_monitors: vec![injected("a")],
            actions: vec![action(
                Action::StopAcceptingRequests.name(),
                vec![threshold("a", 0.9)],
            )],
            ..Default::default()
        };
        let overload = Overload::new(Some(&OverloadConfig::compile(&o).unwrap()));
        overload.states[Action::StopAcceptingRequests.index()].store(0.25f64.to_bits(), Ordering::Relaxed);
        let shed = (0..10_000)
            .filter(|_| overload.sheds(Action::StopAcceptingRequests))
            .count();
        assert!((2_000..3_000).contains(&shed), "{shed} of 10000");
    }

    #[test]
    fn what_envoy_refuses_and_what_weir_does_not_do_are_refused_by_name() {
        let refuse = |o: OverloadManager| OverloadConfig::compile(&o).unwrap_err();
        let with = |actions: Vec<OverloadAction>| OverloadManager {
            resource_monitors: vec![injected("a")],
            actions,
            ..Default::default()
        };
        assert_eq!(
            refuse(with(vec![action(
                Action::ShrinkHeap.name(),
                vec![threshold("b", 0.5)]
            )])),
            "Unknown trigger resource b"
        );
        assert_eq!(
            refuse(with(vec![
                action(Action::ShrinkHeap.name(), vec![threshold("a", 0.5)]),
                action(Action::ShrinkHeap.name(), vec![threshold("a", 0.6)]),
            ])),
            "Duplicate overload action envoy.overload_actions.shrink_heap"
        );
        assert_eq!(
            refuse(with(vec![action(
                Action::ShrinkHeap.name(),
                vec![threshold("a", 0.5), threshold("a", 0.6)]
            )])),
            "Duplicate trigger resource for overload action envoy.overload_actions.shrink_heap"
        );
        assert_eq!(
            refuse(with(vec![action(
                Action::ShrinkHeap.name(),
                vec![scaled("a", 0.8, 0.5)]
            )])),
            "scaling_threshold must be less than saturation_threshold"
        );
        assert!(
            refuse(with(vec![action(
                Action::ShrinkHeap.name(),
                vec![threshold("a", 1.5)]
            )]))
            .contains("within [0, 1]")
        );
        assert_eq!(
            refuse(with(vec![action(
                "envoy.overload_actions.reduce_timeouts",
                vec![]
            )])),
            "overload action envoy.overload_actions.reduce_timeouts is not supported"
        );
        let point = |name: &str| OverloadManager {
            resource_monitors: vec![injected("a")],
            loadshed_points: vec![envoy_types::pb::envoy::config::overload::v3::LoadShedPoint {
                name: name.into(),
                triggers: vec![threshold("a", 0.9)],
            }],
            ..Default::default()
        };
        assert_eq!(
            refuse(point("envoy.load_shed_points.http1_server_abort_dispatch")),
            "load shed point envoy.load_shed_points.http1_server_abort_dispatch is not supported"
        );
        let config = OverloadConfig::compile(&point(Action::ShedListenerAccept.name())).unwrap();
        assert!(config.has(Action::ShedListenerAccept));
        let twice = OverloadManager {
            resource_monitors: vec![injected("a"), injected("a")],
            ..Default::default()
        };
        assert_eq!(refuse(twice), "Duplicate resource monitor a");
        let cpu = OverloadManager {
            resource_monitors: vec![ResourceMonitor {
                name: "cpu".into(),
                config_type: Some(resource_monitor::ConfigType::TypedConfig(any(
                    "envoy.extensions.resource_monitors.cpu_utilization.v3.CpuUtilizationConfig",
                    &InjectedResourceConfig::default(),
                ))),
            }],
            ..Default::default()
        };
        assert!(refuse(cpu).contains("is not supported"));
    }

    #[test]
    fn shrink_heap_takes_its_timer_interval_and_refuses_a_memory_bound_it_cannot_measure() {
        let with = |config: ShrinkHeapConfig| OverloadManager {
            resource_monitors: vec![injected("a")],
            actions: vec![OverloadAction {
                typed_config: Some(any("envoy.config.overload.v3.ShrinkHeapConfig", &config)),
                ..action(Action::ShrinkHeap.name(), vec![threshold("a", 0.9)])
            }],
            ..Default::default()
        };
        let tenth = envoy_types::pb::google::protobuf::Duration {
            seconds: 0,
            nanos: 100_000_000,
        };
        let config = OverloadConfig::compile(&with(ShrinkHeapConfig {
            timer_interval: Some(tenth),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(config.shrink_interval, Duration::from_millis(100));
        assert!(config.has(Action::ShrinkHeap));
        let bound = with(ShrinkHeapConfig {
            max_unfreed_memory_bytes: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 1 }),
            ..Default::default()
        });
        assert!(
            OverloadConfig::compile(&bound)
                .unwrap_err()
                .contains("max_unfreed_memory_bytes is not supported")
        );
        // Envoy's default: every 10 s.
        let plain = OverloadManager {
            resource_monitors: vec![injected("a")],
            actions: vec![action(Action::ShrinkHeap.name(), vec![threshold("a", 0.9)])],
            ..Default::default()
        };
        assert_eq!(
            OverloadConfig::compile(&plain).unwrap().shrink_interval,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn resident_memory_is_read() {
        let bytes = resident_bytes().expect("/proc/self/statm");
        assert!(bytes > 1024 * 1024, "{bytes}");
    }
}
