//! The canary (a heartbeat through Redis and back, judging whether the
//! backplane carries messages) and presence (which nodes are expected to
//! answer).

use super::*;

impl Cluster {
    /// Another process runs with this node's id: each takes the other's
    /// publishes for its own echo and skips them. Said loudly (at most once
    /// a minute) and counted; the operator must give each node its own id.
    ///
    /// Of the two, the younger (the later `started`; by instance on a tie)
    /// refuses to serve: it turns not ready, takes no new clients and
    /// answers no requests from other nodes, so no admin call reaches two
    /// clients under one id. The older goes on.
    pub(super) fn conflict(&self, started: u64, instance: u64) {
        metrics::backplane_error(BackplaneError::NodeIdConflict);
        let younger = (self.started, self.instance) > (started, instance);
        if younger && !self.twin.swap(true, Ordering::Relaxed) {
            self.lifecycle
                .refuse("another process runs as this node id (--node-id); this younger one serves nothing");
            tracing::error!(node = %self.node, "backplane: another, older process runs as this node (same --node-id): this one turns not ready and serves nothing. Give every node its own --node-id");
        }
        let mut last = self.conflict_logged.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::error!(node = %self.node, younger, "backplane: another process runs as this node (same --node-id); messages between the two are lost. Give every node its own --node-id");
        }
    }

    /// The canary: every heartbeat, judge the last one and send the next.
    pub(super) async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut beat = tokio::time::interval(self.config.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => self.heartbeat(),
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Presence: refreshes this node's and reads the others' as often as
    /// the canary beats (at least three times per TTL), in a task of its
    /// own so a slow engine never delays the canary's verdict.
    pub(super) async fn refresh(self: Arc<Self>, stop: CancellationToken) {
        let every = self.config.heartbeat.min(self.config.presence_ttl / 3);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.refresh_presence().await;
                    // Every tenth time all of this node's rosters, so one a
                    // write missed (or a read removed too early) comes back.
                    self.refresh_rosters(ticks.is_multiple_of(10)).await;
                    ticks += 1;
                }
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Writes this node's rosters of topics with presence that changed
    /// (`full`: all of them) and keeps the others alive for the presence
    /// TTL, so a node that dies takes its clients out of presence with it.
    async fn refresh_rosters(&self, full: bool) {
        let (Some(engine), true) = (&self.engine, self.config.presence) else {
            return;
        };
        let Ok(roster) = self.hub.roster(full).await else {
            return;
        };
        if roster.changed.is_empty() && roster.held.is_empty() {
            return;
        }
        let changed = roster
            .changed
            .into_iter()
            .map(|(topic, roster)| {
                let roster = (!roster.is_empty()).then(|| Bytes::from(crate::backplane::wire::encode_roster(&roster)));
                (topic, roster)
            })
            .collect();
        let write = engine.write_rosters(&self.node, changed, roster.held, self.config.presence_ttl);
        if let Err(e) = write.await {
            metrics::backplane_error(BackplaneError::Presence);
            tracing::debug!(error = %e, "backplane: could not write this node's presence rosters");
        }
    }

    /// Judges the previous heartbeat, then sends the next one to this
    /// node's own channel. A heartbeat that did not come back on the
    /// subscription it was sent on, still up, is a silent stall: the
    /// backplane is down and the subscription is renewed. One that was lost
    /// while reconnecting says nothing; the next one will.
    pub(super) fn heartbeat(&self) {
        let Some(engine) = &self.engine else { return };
        let subscription = engine.subscription();
        let (stalled, seq) = {
            let mut canary = self.canary.lock().unwrap_or_else(|e| e.into_inner());
            let stalled = match canary.sent {
                Some((_, on)) if !canary.returned => subscription == Some(on),
                _ => false,
            };
            canary.seq += 1;
            canary.sent = subscription.map(|on| (Instant::now(), on));
            canary.returned = false;
            (stalled, canary.seq)
        };
        let present = self.present.load(Ordering::Relaxed);
        let sent = !stalled
            && present
            && subscription.is_some()
            && self.send(
                self.node.clone(),
                &Message::Heartbeat {
                    seq,
                    instance: self.instance,
                    started: self.started,
                },
            );
        if !sent {
            self.canary.lock().unwrap_or_else(|e| e.into_inner()).sent = None;
            self.set_up(false);
        }
        if stalled {
            metrics::backplane_error(BackplaneError::Stall);
            tracing::warn!("backplane: the canary's heartbeat did not come back; renewing the subscription");
            engine.resubscribe();
        }
    }

    pub(super) fn heartbeat_back(&self, seq: u64) {
        let roundtrip = {
            let mut canary = self.canary.lock().unwrap_or_else(|e| e.into_inner());
            if canary.seq != seq || canary.returned {
                return;
            }
            canary.returned = true;
            canary.sent.map(|(sent, _)| sent.elapsed())
        };
        if let Some(roundtrip) = roundtrip {
            ::metrics::histogram!(metrics::BACKPLANE_ROUNDTRIP_SECONDS).record(roundtrip.as_secs_f64());
        }
        self.set_up(true);
    }

    pub(super) fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            // Metric and readiness first: whoever reads the log line finds them set.
            metrics::gauge_set(metrics::BACKPLANE_UP, if up { 1.0 } else { 0.0 });
            self.lifecycle.set_backplane(up);
            if up {
                tracing::info!(node = %self.node, "backplane up: messages reach other nodes");
            } else {
                tracing::warn!(node = %self.node, "backplane down: local delivery goes on; messages for other nodes are dropped and counted");
            }
        }
    }

    /// Refreshes this node's presence and reads the live nodes into what
    /// this node expects answers from (see [`Cluster::live`]).
    pub(super) async fn refresh_presence(&self) {
        let Some(engine) = &self.engine else { return };
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            engine.refresh_presence(&self.node, self.config.presence_ttl),
        );
        match read.await {
            Ok(Ok(fresh)) => {
                self.present.store(true, Ordering::Relaxed);
                metrics::gauge_set(metrics::BACKPLANE_NODES, fresh.len() as f64);
                let now = Instant::now();
                let mut known = self.live.lock().unwrap_or_else(|e| e.into_inner());
                let mut merged: Vec<Known> = fresh
                    .iter()
                    .map(|p| Known {
                        node: p.node.clone(),
                        seen: now.checked_sub(p.age).unwrap_or(now),
                    })
                    .collect();
                for old in known.iter() {
                    let listed = merged.iter().any(|k| k.node == old.node);
                    if !listed && old.seen.elapsed() < self.config.presence_ttl {
                        merged.push(old.clone());
                    }
                }
                *known = merged;
            }
            _ => {
                self.present.store(false, Ordering::Relaxed);
                metrics::backplane_error(BackplaneError::Presence);
            }
        }
    }

    /// The other nodes expected to answer (all, or `only` that one), with
    /// how long ago each last refreshed its presence.
    pub(super) fn others(&self, only: Option<&NodeId>) -> Vec<Presence> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|k| k.node != self.node && only.is_none_or(|n| *n == k.node))
            .map(|k| Presence {
                node: k.node.clone(),
                age: k.seen.elapsed(),
            })
            .collect()
    }

    /// Another node left cleanly: it is no longer expected at once.
    pub(super) fn left(&self, node: &NodeId) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| k.node != *node);
    }
}
