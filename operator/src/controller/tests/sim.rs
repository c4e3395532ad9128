//! [`Sim`], a tiny simulated world (StatefulSet controller with OnDelete + OrderedReady,
//! kubelet, Octopus nodes / tasks / maintenance mode, the backup Job). Invariants are
//! checked at every moment of every walk.

use super::fixtures::*;

// ------------------------------------------------------------------------ the simulator

/// Ticks that never end on their own.
pub const FOREVER: u32 = u32::MAX;

/// A task Octopus runs, with the ticks it still needs.
#[derive(Clone, Debug)]
pub struct SimTask {
    pub view: TaskView,
    pub left: u32,
}

/// The backup Job: succeeds (or fails) after some ticks.
#[derive(Clone, Debug)]
pub struct SimJob {
    pub name: String,
    pub created_at: Timestamp,
    pub left: u32,
    pub outcome: Option<bool>,
    pub completed_at: Option<Timestamp>,
}

impl SimJob {
    pub fn view(&self) -> JobView {
        JobView {
            name: self.name.clone(),
            succeeded: self.outcome == Some(true),
            failed: self.outcome == Some(false),
            completed_at: self.completed_at,
            created_at: Some(self.created_at),
        }
    }
}

/// Where the operator dies during a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// It does not: act, then record.
    Never,
    /// After applying the StatefulSet, before the action and the status write.
    AfterApply,
    /// After the action, before the status write: the world moved, the status did not.
    BeforeRecord,
}

/// How the pods of a broken version fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The container exits at start, again and again (CrashLoopBackOff).
    Crash,
    /// The container never runs (its image cannot be pulled, its config is wrong).
    Start(StartFailure),
    /// The container runs and never becomes ready.
    Hang,
}

/// The upgrade a walk carries out, for the invariants.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub strategy: Option<Strategy>,
    pub from: String,
    pub to: String,
    pub replicas: u32,
}

impl Expect {
    pub fn new(strategy: Strategy, from: &str, to: &str, replicas: u32) -> Self {
        Self {
            strategy: Some(strategy),
            from: from.into(),
            to: to.into(),
            replicas,
        }
    }
}

/// A tiny world: the StatefulSet controller (OnDelete, OrderedReady, one pod per tick),
/// the kubelet (a started pod is ready one tick later, or crash-loops), Octopus (nodes that
/// register when their pod is ready and keep their drain flag in the database, server-wide
/// maintenance mode, tasks that run on serving nodes) and the backup Job. A reconcile
/// observes it, decides, acts and records the status the way `controller::apply` does.
#[derive(Clone, Debug)]
pub struct Sim {
    pub generation: i64,
    pub spec: OctopusClusterSpec,
    pub status: OctopusClusterStatus,
    pub missing_secrets: Vec<String>,
    pub sts: Option<StatefulSetView>,
    /// The PodDisruptionBudget as last applied.
    pub pdb: Option<Evictions>,
    /// The upgrade slots the next reconcile sees (a fleet of sims sets them).
    pub slots: UpgradeSlots,
    /// Evictions the budget refused (`evict`).
    pub evictions_refused: u32,
    pub pods: BTreeMap<u32, PodView>,
    /// Nodes registered with Octopus: like their drain flag, they live in the database.
    pub nodes: BTreeMap<String, OctopusNode>,
    pub maintenance: bool,
    pub tasks: Vec<SimTask>,
    pub task_seq: u32,
    /// Every this many ticks a task starts on each serving node, unless in maintenance mode.
    pub spawn_every: Option<u32>,
    /// Ticks a spawned task runs.
    pub task_ticks: u32,
    /// The Octopus API fails with this (reason, message).
    pub fault: Option<(Reason, String)>,
    /// Backup Jobs by name: every attempt's, until a person deletes them.
    pub jobs: BTreeMap<String, SimJob>,
    pub backup_ticks: u32,
    pub backup_fails: bool,
    /// Master Key copies by name (they outlive everything, like the real ones).
    pub master_key_copies: BTreeSet<String>,
    /// A pod of this ordinal crash-loops on this version.
    pub crash_on: Option<(u32, String)>,
    /// What that pod's container says when it exits (its termination message).
    pub crash_message: Option<String>,
    /// Versions whose pods cannot start, on any ordinal, and how.
    pub broken: BTreeMap<String, Broken>,
    /// Ticks from a container's start until its pod is ready.
    pub start_ticks: u32,
    pub now: Timestamp,
    pub ticks: u32,
    pub reconciles: u32,
    pub tentacle_queues: u32,
    /// Status writes `record::write` would make (the status changed).
    pub status_writes: u32,
    /// Events `record::write` would publish, by reason, in order.
    pub events: Vec<Reason>,
    /// Actions performed.
    pub actions: u32,
    pub expect: Expect,
    /// The template has run the new version with pods (stop-the-world).
    pub new_template_started: bool,
    /// Most nodes out of service at one moment (rolling).
    pub max_out: usize,
    /// When each event of the timeline happened.
    pub timeline_at: Vec<Timestamp>,
    /// Pods the operator deleted, in order.
    pub replaced: Vec<String>,
    /// What happened in the world, in order.
    pub timeline: Vec<String>,
    /// One line per reconcile.
    pub log: Vec<String>,
    pub violations: Vec<String>,
    pub last: Option<Decision>,
}

impl Sim {
    pub fn new(version: &str, replicas: u32) -> Self {
        Self {
            generation: 1,
            spec: spec(version, i32::try_from(replicas).expect("small")),
            status: OctopusClusterStatus::default(),
            missing_secrets: Vec::new(),
            sts: None,
            pdb: None,
            slots: UpgradeSlots::default(),
            evictions_refused: 0,
            pods: BTreeMap::new(),
            nodes: BTreeMap::new(),
            maintenance: false,
            tasks: Vec::new(),
            task_seq: 0,
            spawn_every: None,
            task_ticks: 3,
            fault: None,
            jobs: BTreeMap::new(),
            backup_ticks: 2,
            backup_fails: false,
            master_key_copies: BTreeSet::new(),
            crash_on: None,
            crash_message: None,
            broken: BTreeMap::new(),
            start_ticks: 1,
            now: t0(),
            ticks: 0,
            reconciles: 0,
            tentacle_queues: 0,
            status_writes: 0,
            events: Vec::new(),
            actions: 0,
            expect: Expect::default(),
            new_template_started: false,
            max_out: 0,
            timeline_at: Vec::new(),
            replaced: Vec::new(),
            timeline: Vec::new(),
            log: Vec::new(),
            violations: Vec::new(),
            last: None,
        }
    }

    /// A cluster of `n` nodes ready on `version`, its status recorded by one reconcile.
    pub fn steady(version: &str, n: u32) -> Self {
        let mut sim = Self::new(version, n);
        sim.sts = Some(StatefulSetView {
            version: Some(version.into()),
            replicas: i32::try_from(n).expect("small"),
        });
        for i in 0..n {
            sim.pods.insert(i, pod(i, version));
            sim.nodes.insert(pod_name(i), node(i, version));
        }
        sim.status.schema_version = Some(version.into());
        let d = sim.reconcile(Kill::Never);
        assert!(
            d.action.is_none() && cond(&d, READY).status,
            "the steady world is not steady: {d:?}"
        );
        sim
    }

    /// A person edits the spec (the generation moves).
    pub fn change_spec(&mut self, edit: impl FnOnce(&mut OctopusClusterSpec)) {
        edit(&mut self.spec);
        self.generation += 1;
    }

    pub fn add_task(&mut self, ordinal: Option<u32>, ticks: u32) -> String {
        self.task_seq += 1;
        let id = format!("ServerTasks-{}", self.task_seq);
        self.tasks.push(SimTask {
            view: task(&id, ordinal),
            left: ticks,
        });
        self.event(format!(
            "task-started:{id}@{}",
            ordinal.map(pod_name).unwrap_or_default()
        ));
        id
    }

    /// `kubectl drain` (or the autoscaler) evicts a pod through the Eviction API: refused
    /// (false) unless the budget the operator applied lets it through, as the API server
    /// and the disruption controller decide it (`maxUnavailable` against the StatefulSet's
    /// replicas; a pod that is not ready only while the budget holds, IfHealthyBudget).
    pub fn evict(&mut self, ordinal: u32) -> bool {
        let name = pod_name(ordinal);
        let Some(pod) = self.pods.get(&ordinal).filter(|p| !p.terminating) else {
            return false;
        };
        let pod_healthy = pod.ready;
        let allowed = match self.pdb {
            None => true,
            Some(budget) => {
                let expected = self.sts.as_ref().map_or(0, |s| s.replicas);
                let healthy = i32::try_from(
                    self.pods
                        .values()
                        .filter(|p| p.ready && !p.terminating)
                        .count(),
                )
                .expect("few");
                let desired = expected - budget.max_unavailable();
                if pod_healthy {
                    healthy - desired > 0
                } else {
                    healthy >= desired
                }
            }
        };
        if allowed {
            if let Some(p) = self.pods.get_mut(&ordinal) {
                p.terminating = true;
            }
            self.event(format!("evicted:{name}"));
        } else {
            self.evictions_refused += 1;
            self.event(format!("eviction-refused:{name}"));
        }
        allowed
    }

    pub fn event(&mut self, what: String) {
        self.timeline.push(what);
        self.timeline_at.push(self.now);
    }

    /// When the first event `what` of the timeline happened.
    pub fn when(&self, what: &str) -> Timestamp {
        self.timeline_at[pos(&self.timeline, what)]
    }

    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            let at = self.log.last().cloned().unwrap_or_default();
            self.violations.push(format!("{what}\n      at {at}"));
        }
    }

    pub fn octopus_state(&self) -> OctopusState {
        OctopusState {
            nodes: self
                .nodes
                .values()
                .map(|n| OctopusNode {
                    running_tasks: u32::try_from(
                        self.tasks
                            .iter()
                            .filter(|t| t.view.node.as_deref() == Some(n.name.as_str()))
                            .count(),
                    )
                    .expect("few"),
                    ..n.clone()
                })
                .collect(),
            maintenance: self.maintenance,
            running_tasks: self.tasks.iter().map(|t| t.view.clone()).collect(),
        }
    }

    /// What `observe::observe` would read.
    pub fn observe(&self) -> Observed {
        let pods: Vec<PodView> = self.pods.values().cloned().collect();
        let octopus = match (&self.fault, pods.iter().any(|p| p.ready)) {
            (_, false) => OctopusView::NoReadyNode,
            (Some((reason, message)), true) => OctopusView::Unavailable {
                reason: *reason,
                message: message.clone(),
            },
            (None, true) => OctopusView::Up(self.octopus_state()),
        };
        let backing_up = self
            .status
            .upgrade
            .as_ref()
            .filter(|u| u.finished_at.is_none())
            .filter(|u| typed(u).has(StepKind::Backup));
        // As observe reads them: by the names of the recorded attempt.
        let (backup_job, master_key_copy) = match backing_up.map(typed) {
            Some(u) => (
                self.jobs.get(&u.backup_job(NAME)).map(SimJob::view),
                self.master_key_copies.contains(&u.master_key_copy(NAME)),
            ),
            None => (None, false),
        };
        Observed {
            name: NAME.into(),
            uid: UID.into(),
            generation: self.generation,
            spec: self.spec.clone(),
            status: self.status.clone(),
            missing_secrets: self.missing_secrets.clone(),
            statefulset: self.sts.clone(),
            pods,
            octopus,
            backup_job,
            backup_history: self.jobs.values().map(SimJob::view).collect(),
            master_key_copy,
            evictions: self.pdb,
            upgrade_slots: self.slots,
            now: self.now,
        }
    }

    /// One reconcile: observe, decide, apply the StatefulSet, act, record.
    pub fn reconcile(&mut self, kill: Kill) -> Decision {
        self.reconciles += 1;
        let o = self.observe();
        let d = decide(&o);
        self.log_decision(&d, kill);
        self.check_decision(&o, &d);
        if let Some(evictions) = d.evictions
            && self.pdb != Some(evictions)
        {
            self.event(format!("pdb:{}", evictions.max_unavailable()));
            self.pdb = Some(evictions);
        }
        if let Some(want) = &d.statefulset {
            self.apply_statefulset(want);
            self.check_world("after applying the StatefulSet");
        }
        if kill != Kill::AfterApply {
            if let Some(action) = &d.action {
                self.actions += 1;
                self.perform(action);
                self.check_world("after the action");
            }
            if kill == Kill::Never {
                let status = record(&o, &d);
                let notes = crate::controller::record::notes(&self.status, &status, &d);
                self.events.extend(notes.iter().map(|n| n.reason));
                if status != self.status {
                    self.status_writes += 1;
                }
                self.status = status;
            }
        }
        self.last = Some(d.clone());
        d
    }

    /// One reconcile, then the world moves one tick.
    pub fn step(&mut self, kill: Kill) -> Decision {
        let d = self.reconcile(kill);
        self.tick();
        d
    }

    pub fn log_decision(&mut self, d: &Decision, kill: Kill) {
        let (step, node) = step_of(d);
        let progressing = cond(d, PROGRESSING);
        let line = format!(
            "#{} t+{}s gen{} {}{} -> action={} sts={} {}: {}{}",
            self.reconciles,
            self.now.duration_since(t0()).as_secs(),
            self.generation,
            step.map_or("-", StepKind::as_str),
            node.map(|n| format!(" {n}")).unwrap_or_default(),
            d.action.as_ref().map_or("-", Action::name),
            d.statefulset
                .as_ref()
                .map_or("-".into(), |w| format!("{}@{}", w.version, w.replicas)),
            progressing.reason,
            progressing.message,
            match kill {
                Kill::Never => "",
                Kill::AfterApply => " [killed after applying the StatefulSet]",
                Kill::BeforeRecord => " [killed before recording]",
            }
        );
        self.log.push(line);
    }

    pub fn apply_statefulset(&mut self, want: &StatefulSetWant) {
        let view = StatefulSetView {
            version: Some(want.version.clone()),
            replicas: want.replicas,
        };
        if self.sts.as_ref() != Some(&view) {
            self.event(format!("sts:{}@{}", want.version, want.replicas));
            self.sts = Some(view);
        }
    }

    pub fn perform(&mut self, action: &Action) {
        match action {
            Action::SetMaintenance(on) => {
                if self.maintenance && !*on {
                    self.check_maintenance_off();
                }
                if self.maintenance != *on {
                    self.event(format!("maintenance:{}", if *on { "on" } else { "off" }));
                }
                self.maintenance = *on;
            }
            Action::SetDrain {
                node_id,
                node,
                drained,
            } => {
                let found = self.nodes.values_mut().find(|n| n.id == *node_id);
                match found {
                    Some(n) if n.name == *node => n.drained = *drained,
                    _ => self.violation(format!("drain of unknown node {node_id} ({node})")),
                }
                let verb = if *drained { "drain" } else { "undrain" };
                self.event(format!("{verb}:{node}"));
            }
            Action::CancelTasks(ids) => {
                for t in &mut self.tasks {
                    if ids.contains(&t.view.id) {
                        t.view.cancelling = true;
                    }
                }
                self.event(format!("cancel:{}", ids.join(",")));
            }
            Action::DeletePod(name) => {
                match self.pods.values_mut().find(|p| p.name == *name) {
                    Some(p) => p.terminating = true,
                    None => self.violation(format!("deleted missing pod {name}")),
                }
                self.replaced.push(name.clone());
                self.event(format!("pod-deleted:{name}"));
            }
            Action::CopyMasterKey { from, to, attempt } => {
                let name = names::master_key_copy(NAME, from, to, attempt.as_deref());
                self.master_key_copies.insert(name.clone());
                self.event(format!("master-key-copy:{name}"));
            }
            Action::CreateBackupJob { from, to, attempt } => {
                let name = names::backup_job(NAME, from, to, attempt.as_deref());
                if self.jobs.contains_key(&name) {
                    self.violation(format!("created the backup Job {name} twice"));
                } else {
                    self.jobs.insert(
                        name.clone(),
                        SimJob {
                            name: name.clone(),
                            created_at: self.now,
                            left: self.backup_ticks,
                            outcome: None,
                            completed_at: None,
                        },
                    );
                    self.event(format!("backup-job:created:{name}"));
                }
            }
            Action::DeleteBackupJob(name) => {
                if self.jobs.remove(name).is_none() {
                    self.violation(format!("deleted missing backup Job {name}"));
                }
                self.event(format!("backup-job:deleted:{name}"));
            }
            Action::QueueTentacleTasks { .. } => {
                self.tentacle_queues += 1;
                self.event("tentacles".into());
            }
            Action::DeleteNodeRecord { node_id, node } => {
                let found = self.nodes.values().find(|n| n.id == *node_id).cloned();
                match found {
                    Some(n) if n.name == *node => {
                        if self.pods.values().any(|p| p.name == *node) {
                            self.violation(format!("forgot node {node} while its pod runs"));
                        }
                        self.nodes.remove(node);
                    }
                    _ => self.violation(format!("deleted unknown node record {node_id}")),
                }
                self.event(format!("node-record-deleted:{node}"));
            }
        }
    }

    /// The world moves on by ten seconds.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.now = after(self.now, 10);

        // Octopus: tasks run down; cancelled ones end.
        for t in &mut self.tasks {
            if t.view.cancelling {
                t.left = 0;
            } else if t.left != FOREVER {
                t.left = t.left.saturating_sub(1);
            }
        }
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|t| t.left == 0);
        self.tasks = running;
        for t in done {
            self.event(format!("task-finished:{}", t.view.id));
        }

        // The backup Job.
        let mut job_events = Vec::new();
        for job in self.jobs.values_mut().filter(|j| j.outcome.is_none()) {
            if job.left == 0 {
                job.outcome = Some(!self.backup_fails);
                job.completed_at = Some(self.now);
                let verb = if self.backup_fails {
                    "failed"
                } else {
                    "succeeded"
                };
                job_events.push(format!("backup-job:{verb}:{}", job.name));
            } else {
                job.left -= 1;
            }
        }
        for e in job_events {
            self.event(e);
        }

        // Kubelet: terminating pods go; Octopus sees their node offline.
        let gone: Vec<u32> = self
            .pods
            .values()
            .filter(|p| p.terminating)
            .map(|p| p.ordinal)
            .collect();
        for ordinal in gone {
            let name = pod_name(ordinal);
            let killed: Vec<String> = self
                .tasks
                .iter()
                .filter(|t| t.view.node.as_deref() == Some(name.as_str()) && !t.view.cancelling)
                .map(|t| t.view.id.clone())
                .collect();
            if !killed.is_empty() {
                self.violation(format!("pod {name} stopped while running tasks {killed:?}"));
            }
            self.tasks
                .retain(|t| t.view.node.as_deref() != Some(name.as_str()));
            self.pods.remove(&ordinal);
            if let Some(n) = self.nodes.get_mut(&name) {
                n.offline = true;
            }
            self.event(format!("pod-gone:{name}"));
        }

        // Kubelet: started pods become ready (and register with Octopus) once they have
        // run `start_ticks`, or crash, or never start.
        let starting: Vec<u32> = self
            .pods
            .values()
            .filter(|p| !p.ready && !p.terminating)
            .map(|p| p.ordinal)
            .collect();
        let start_time = SignedDuration::from_secs(10 * i64::from(self.start_ticks));
        for ordinal in starting {
            let now = self.now;
            let Some(p) = self.pods.get_mut(&ordinal) else {
                continue;
            };
            let version = p.version.clone().unwrap_or_default();
            let broken = self.broken.get(&version).copied();
            let crashes = broken == Some(Broken::Crash)
                || self
                    .crash_on
                    .as_ref()
                    .is_some_and(|(o, v)| *o == ordinal && *v == version);
            let name = p.name.clone();
            if let Some(Broken::Start(failure)) = broken {
                if p.waiting.is_none() {
                    p.waiting = Some(waiting_on(failure));
                    p.started_at = None;
                    self.event(format!("pod-cannot-start:{name}@{version}"));
                }
                continue;
            }
            if p.waiting.take().is_some() {
                // Fixed: the container starts now.
                p.started_at = Some(now);
            }
            if crashes {
                p.crash_looping = true;
                p.restarts += 1;
                p.started_at = Some(now);
                p.last_exit = Some(ContainerExit {
                    kubelet_reason: Some("Error".into()),
                    message: self.crash_message.clone(),
                    exit_code: 1,
                    finished_at: Some(now),
                });
                self.event(format!("pod-crashed:{name}@{version}"));
            } else if broken != Some(Broken::Hang)
                && now.duration_since(p.start_clock(Timestamp::MIN)) >= start_time
            {
                p.crash_looping = false;
                p.ready = true;
                p.ready_since = Some(now);
                let n = self
                    .nodes
                    .entry(name.clone())
                    .or_insert_with(|| node(ordinal, &version));
                n.version = Some(version.clone());
                n.offline = false;
                self.event(format!("pod-ready:{name}@{version}"));
            }
        }

        // StatefulSet controller: OnDelete, OrderedReady, one pod per tick.
        if let Some(sts) = self.sts.clone() {
            let replicas = u32::try_from(sts.replicas.max(0)).expect("non-negative");
            let excess = self
                .pods
                .values()
                .filter(|p| p.ordinal >= replicas && !p.terminating)
                .map(|p| p.ordinal)
                .max();
            if let Some(ordinal) = excess {
                if let Some(p) = self.pods.get_mut(&ordinal) {
                    p.terminating = true;
                }
                self.event(format!("pod-stopping:{}", pod_name(ordinal)));
            } else if let Some(missing) = (0..replicas).find(|o| !self.pods.contains_key(o)) {
                let lower_ready = (0..missing)
                    .all(|l| self.pods.get(&l).is_some_and(|p| p.ready && !p.terminating));
                if lower_ready {
                    let version = sts.version.clone().unwrap_or_default();
                    self.pods.insert(
                        missing,
                        PodView {
                            name: pod_name(missing),
                            ordinal: missing,
                            version: Some(version.clone()),
                            created_at: Some(self.now),
                            started_at: Some(self.now),
                            ..PodView::default()
                        },
                    );
                    self.event(format!("pod-created:{}@{version}", pod_name(missing)));
                }
            }
        }

        // Octopus: work arrives on serving nodes.
        if let Some(every) = self.spawn_every
            && self.ticks.is_multiple_of(every)
            && !self.maintenance
        {
            let serving: Vec<u32> = self
                .pods
                .values()
                .filter(|p| p.ready && !p.terminating)
                .filter(|p| {
                    self.nodes
                        .get(&p.name)
                        .is_some_and(|n| !n.drained && !n.offline)
                })
                .map(|p| p.ordinal)
                .collect();
            for ordinal in serving {
                let ticks = self.task_ticks;
                self.add_task(Some(ordinal), ticks);
            }
        }
        self.check_world("after the world moved");
        self.check_released();
    }

    /// The cluster is deleted now: the finalizer's cleanup reads the saved status and
    /// releases what it names. Returns what Octopus still holds afterwards (nothing can be
    /// released while no node runs: the operator says so with an Event).
    pub fn delete(&mut self) -> Option<String> {
        if !self.pods.values().any(|p| p.ready) {
            return None;
        }
        let state = self.octopus_state();
        for action in crate::controller::decide::release(&self.status, &state) {
            self.perform(&action);
        }
        let drained: Vec<&str> = self
            .nodes
            .values()
            .filter(|n| n.drained)
            .map(|n| n.name.as_str())
            .collect();
        (self.maintenance || !drained.is_empty()).then(|| {
            format!(
                "after deletion: maintenance {}, drained {drained:?}",
                self.maintenance
            )
        })
    }

    /// Octopus holds maintenance mode or a drained node only while status records the
    /// unfinished upgrade that will release it (and that deletion's cleanup reads).
    pub fn check_released(&mut self) {
        let recorded = self
            .status
            .upgrade
            .as_ref()
            .is_some_and(|u| u.finished_at.is_none());
        let drained: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.drained)
            .map(|n| n.name.clone())
            .collect();
        if !recorded && (self.maintenance || !drained.is_empty()) {
            self.violation(format!(
                "maintenance mode {} and drained nodes {drained:?} with no upgrade record to \
                 release them",
                if self.maintenance { "on" } else { "off" }
            ));
        }
    }

    /// Desired nodes that serve no tasks right now: pod missing, not ready or terminating,
    /// or the node drained or offline in Octopus.
    pub fn out_of_service(&self) -> Vec<String> {
        (0..self.expect.replicas)
            .filter(|ordinal| {
                let name = pod_name(*ordinal);
                let pod_ok = self
                    .pods
                    .get(ordinal)
                    .is_some_and(|p| p.ready && !p.terminating);
                let node_ok = self
                    .nodes
                    .get(&name)
                    .is_none_or(|n| !n.drained && !n.offline);
                !(pod_ok && node_ok)
            })
            .map(pod_name)
            .collect()
    }

    /// Invariants of the world at every moment.
    pub fn check_world(&mut self, when: &str) {
        let mut problems = Vec::new();
        let lines: BTreeSet<(u64, u64)> = self
            .pods
            .values()
            .filter_map(|p| p.version.as_deref())
            .map(line)
            .collect();
        if lines.len() > 1 {
            problems.push(format!("pods run schema lines {lines:?} at once"));
        }
        match self.expect.strategy {
            Some(Strategy::Rolling) => {
                let out = self.out_of_service();
                self.max_out = self.max_out.max(out.len());
                if out.len() > 1 {
                    problems.push(format!("nodes out of service at once: {out:?}"));
                }
            }
            Some(Strategy::StopTheWorld) => {
                // The acknowledged way back after a failed migration (the database was
                // restored) may go back to the old version; a later attempt starts afresh.
                if self.returning() {
                    self.new_template_started = false;
                }
                if let Some(sts) = self.sts.clone() {
                    let template = sts.version.clone().unwrap_or_default();
                    let full = i32::try_from(self.expect.replicas).expect("small");
                    let backup_needed = !self.spec.upgrade.backup_skipped();
                    if template == self.expect.from && sts.replicas < full {
                        if !self.maintenance && !self.returning() {
                            problems.push("nodes stop before maintenance mode is on".into());
                        }
                        // This attempt's own backup: an earlier attempt's does not count.
                        // A return plan takes none (the person restored one).
                        let recorded = self.status.upgrade.as_ref().map(typed);
                        if backup_needed && recorded.is_none() {
                            problems.push(
                                "nodes stop before the backup succeeded (no upgrade recorded)"
                                    .into(),
                            );
                        }
                        let attempt =
                            recorded.filter(|u| !u.is_return() && u.from == self.expect.from);
                        if backup_needed && let Some(u) = attempt {
                            if !self.master_key_copies.contains(&u.master_key_copy(NAME)) {
                                problems.push(format!(
                                    "nodes stop before the Master Key is copied (attempt {:?})",
                                    u.attempt
                                ));
                            }
                            let job = self.jobs.get(&u.backup_job(NAME));
                            if job.is_none_or(|j| j.outcome != Some(true)) {
                                problems.push(format!(
                                    "nodes stop before the backup succeeded (attempt {:?})",
                                    u.attempt
                                ));
                            }
                        }
                        if !self.tasks.is_empty() {
                            problems
                                .push(format!("nodes stop while {} task(s) run", self.tasks.len()));
                        }
                    }
                    if template == self.expect.to {
                        let old: Vec<String> = self
                            .pods
                            .values()
                            .filter(|p| p.version.as_deref() != Some(self.expect.to.as_str()))
                            .map(|p| p.name.clone())
                            .collect();
                        if !old.is_empty() {
                            problems.push(format!(
                                "the template runs {} while {old:?} run another version",
                                self.expect.to
                            ));
                        }
                        if sts.replicas >= 1 {
                            self.new_template_started = true;
                        }
                    } else if self.new_template_started {
                        problems.push(format!(
                            "the template went back to {template}@{} after pods started on {}",
                            sts.replicas, self.expect.to
                        ));
                    }
                }
            }
            _ => {}
        }
        for p in problems {
            self.violation(format!("{when}: {p}"));
        }
    }

    /// Lifting maintenance mode during a schema upgrade gives the cluster back to users
    /// before the last node is verified. Only once nothing old can run again: the template
    /// runs the new version, no pod of another version is left, and a node that is ready on
    /// the new version, undrained and reported on it by Octopus serves (so the schema is
    /// migrated). Before anything stopped it is always allowed: nothing was taken away.
    fn check_maintenance_off(&mut self) {
        if self.expect.strategy != Some(Strategy::StopTheWorld) || self.returning() {
            return;
        }
        let to = self.expect.to.clone();
        let full = i32::try_from(self.expect.replicas).expect("small");
        let Some(sts) = self.sts.clone() else {
            return;
        };
        let template = sts.version.unwrap_or_default();
        if template != to && sts.replicas >= full {
            return;
        }
        let mut problems = Vec::new();
        if template != to {
            problems.push(format!(
                "maintenance mode off while nodes are stopped on {template}@{}, before the \
                 schema is migrated",
                sts.replicas
            ));
        }
        let old: Vec<&str> = self
            .pods
            .values()
            .filter(|p| p.version.as_deref() != Some(to.as_str()))
            .map(|p| p.name.as_str())
            .collect();
        if !old.is_empty() {
            problems.push(format!(
                "maintenance mode off while {old:?} run an old version"
            ));
        }
        let serving = self.pods.values().any(|p| {
            p.ready
                && !p.terminating
                && p.version.as_deref() == Some(to.as_str())
                && self.nodes.get(&p.name).is_some_and(|n| {
                    !n.drained && !n.offline && n.version.as_deref() == Some(to.as_str())
                })
        });
        if !serving {
            problems.push(format!(
                "maintenance mode off before a node serves verified on {to}"
            ));
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// A return plan (back to the old version after a failed migration) is under way or
    /// acknowledged.
    fn returning(&self) -> bool {
        (self.spec.version == self.expect.from && self.spec.upgrade.restored_backup.is_some())
            || self
                .status
                .upgrade
                .as_ref()
                .is_some_and(|u| typed(u).is_return())
    }

    /// Invariants of one decision against the world it was made on.
    pub fn check_decision(&mut self, o: &Observed, d: &Decision) {
        let Some(action) = &d.action else {
            return;
        };
        let needs_octopus = matches!(
            action,
            Action::SetMaintenance(_)
                | Action::SetDrain { .. }
                | Action::CancelTasks(_)
                | Action::QueueTentacleTasks { .. }
        );
        if needs_octopus && o.octopus.state().is_none() {
            self.violation(format!("acted blind: {action:?} without Octopus's view"));
        }
        if d.stop.is_some() {
            self.violation(format!("{action:?} despite the stop {:?}", d.stop));
        }
        let saved = o
            .status
            .upgrade
            .as_ref()
            .filter(|u| u.finished_at.is_none())
            .map(|u| &u.started_at);
        let acting_for = d.upgrade.as_ref().map(|u| &u.started_at);
        if saved.is_none() || saved != acting_for {
            self.violation(format!(
                "{action:?} before its upgrade was recorded (saved {saved:?}, acting for \
                 {acting_for:?})"
            ));
        }
        if let Action::DeletePod(name) = action {
            let drained = self.nodes.get(name).is_some_and(|n| n.drained);
            let busy: Vec<String> = self
                .tasks
                .iter()
                .filter(|t| t.view.node.as_deref() == Some(name.as_str()))
                .map(|t| t.view.id.clone())
                .collect();
            if !drained || !busy.is_empty() {
                self.violation(format!(
                    "replacing {name}: drained={drained}, running tasks {busy:?}"
                ));
            }
        }
    }

    /// The cluster is where the spec wants it and the operator has nothing left to do.
    pub fn settled(&self) -> bool {
        let Some(d) = &self.last else {
            return false;
        };
        d.action.is_none()
            && cond(d, READY).status
            && d.upgrade.as_ref().is_none_or(|u| u.finished_at.is_some())
            && d.statefulset == want(&self.spec.version, self.spec.replicas)
            && self.status.upgrade == d.upgrade
    }

    pub fn try_run(&mut self, max: u32) -> Result<(), String> {
        for _ in 0..max {
            self.step(Kill::Never);
            if self.settled() {
                return Ok(());
            }
        }
        Err(format!("did not settle within {max} reconciles"))
    }

    /// Reconciles until settled; panics with the story when it does not.
    pub fn run(&mut self, max: u32) {
        if let Err(e) = self.try_run(max) {
            panic!("{e}\n{}", self.story());
        }
    }

    /// Reconciles until a decision satisfies `until`; the world is left right after that
    /// reconcile's act and record.
    pub fn run_until(&mut self, max: u32, until: impl Fn(&Decision) -> bool) -> Decision {
        for _ in 0..max {
            let d = self.reconcile(Kill::Never);
            if until(&d) {
                return d;
            }
            self.tick();
        }
        panic!("never got there within {max} reconciles\n{}", self.story());
    }

    /// Reconciles until the decision about to be made satisfies `until`, and leaves the
    /// world and status just before that reconcile.
    pub fn run_until_due(&mut self, max: u32, until: impl Fn(&Decision) -> bool) -> Decision {
        for _ in 0..max {
            let before = self.clone();
            let d = self.reconcile(Kill::Never);
            if until(&d) {
                *self = before;
                return d;
            }
            self.tick();
        }
        panic!("never got there within {max} reconciles\n{}", self.story());
    }

    pub fn story(&self) -> String {
        let tail = self.log.len().saturating_sub(40);
        format!(
            "violations:\n  {}\nlast reconciles:\n  {}\ntimeline:\n  {}",
            self.violations.join("\n  "),
            self.log[tail..].join("\n  "),
            self.timeline.join(" | ")
        )
    }

    pub fn assert_clean(&self) {
        assert!(self.violations.is_empty(), "{}", self.story());
    }

    /// The end of every walk: every node ready and serving on `version`, Octopus out of
    /// maintenance mode, the upgrade record finished, Ready in status.
    pub fn assert_converged(&self, version: &str) {
        self.assert_clean();
        let n = u32::try_from(self.spec.replicas).expect("small");
        let story = || self.story();
        assert_eq!(
            self.pods.keys().copied().collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>(),
            "{}",
            story()
        );
        for p in self.pods.values() {
            assert!(
                p.ready && !p.terminating && p.version.as_deref() == Some(version),
                "{p:?}\n{}",
                story()
            );
            let node = self.nodes.get(&p.name).expect("registered");
            assert!(!node.drained && !node.offline, "{node:?}\n{}", story());
            assert_eq!(node.version.as_deref(), Some(version));
        }
        assert!(!self.maintenance, "maintenance mode left on\n{}", story());
        assert_eq!(
            self.sts,
            Some(StatefulSetView {
                version: Some(version.into()),
                replicas: self.spec.replicas,
            })
        );
        if let Some(up) = &self.status.upgrade {
            assert!(up.finished_at.is_some(), "{up:?}");
            assert!(
                typed(up).steps.iter().all(|s| s.state == StepState::Done),
                "{up:?}"
            );
            assert!(up.step.is_none() && up.node.is_none(), "{up:?}");
            assert!(up.stopped_reason.is_none(), "{up:?}");
            assert!(
                up.held_by.is_none(),
                "nothing holds a finished upgrade: {up:?}"
            );
        }
        assert!(
            conditions::is_true(&self.status.conditions, READY),
            "{:?}",
            self.status.conditions
        );
        for type_ in [DEGRADED, UPGRADE_BLOCKED, PAUSED] {
            assert!(
                !conditions::is_true(&self.status.conditions, type_),
                "{type_}: {:?}",
                self.status.conditions
            );
        }
        assert_eq!(self.status.current_version.as_deref(), Some(version));
        assert_eq!(self.status.target_version.as_deref(), Some(version));
    }
}

pub fn pos(timeline: &[String], what: &str) -> usize {
    timeline
        .iter()
        .position(|e| e == what)
        .unwrap_or_else(|| panic!("{what} never happened:\n  {}", timeline.join(" | ")))
}

pub fn last_pos(timeline: &[String], prefix: &str) -> Option<usize> {
    timeline.iter().rposition(|e| e.starts_with(prefix))
}

pub fn first_pos(timeline: &[String], prefix: &str) -> Option<usize> {
    timeline.iter().position(|e| e.starts_with(prefix))
}
