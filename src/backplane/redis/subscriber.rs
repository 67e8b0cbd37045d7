//! The subscriber: one pub/sub connection, subscribed to exactly the
//! channels the node listens to; after a reconnect (or when the canary
//! asks) it subscribes to all of them again, backing off until a
//! subscription works.

use super::*;

impl Redis {
    /// The subscriber task: connect, subscribe to every wanted channel, then
    /// pass messages on and follow changes to `wanted`, until the connection
    /// ends or the canary asks for a new one.
    pub(super) async fn subscribe_loop(self: Arc<Self>, inbound: mpsc::Sender<Inbound>, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        let mut generation = 0;
        loop {
            let connect = tokio::time::timeout(IO_TIMEOUT, self.client.get_async_pubsub());
            let pubsub = tokio::select! {
                pubsub = connect => pubsub,
                _ = stop.cancelled() => return,
            };
            let (mut sink, mut stream) = match pubsub {
                Ok(Ok(pubsub)) => pubsub.split(),
                failed => {
                    let (kind, error) = match failed {
                        Ok(Err(e)) => {
                            let e = EngineError::from(e);
                            (kind_of(&e), e.to_string())
                        }
                        _ => (BackplaneError::Connect, "timed out".to_string()),
                    };
                    metrics::backplane_error(kind);
                    if backoff.attempts == 0 {
                        tracing::warn!(%error, "backplane: cannot subscribe in Redis; retrying with backoff");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next()) => continue,
                        _ = stop.cancelled() => return,
                    }
                }
            };
            let mut subscribed: HashSet<String> = HashSet::new();
            generation += 1;
            // After a (re)connect, subscribe to all; then on each change.
            let mut dirty = true;
            let why = loop {
                if std::mem::take(&mut dirty) {
                    let (add, remove) = {
                        let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
                        let add: Vec<String> = wanted.difference(&subscribed).cloned().collect();
                        let remove: Vec<String> = subscribed.difference(&wanted).cloned().collect();
                        (add, remove)
                    };
                    if let Err(e) = reconcile(&mut sink, &add, &remove).await {
                        metrics::backplane_error(kind_of(&e));
                        break format!("subscribing failed: {e}");
                    }
                    // Only a subscription that worked ends the backoff: a
                    // connection Redis takes but then refuses (no password)
                    // must not be retried at once, forever.
                    backoff = Backoff::default();
                    subscribed.extend(add);
                    for channel in &remove {
                        subscribed.remove(channel);
                    }
                    // Up once every channel is subscribed (the first time).
                    self.subscription.store(generation, Ordering::Relaxed);
                }
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => {
                            metrics::backplane_messages("in", 1);
                            let Some(channel) = parse_name(msg.get_channel_name()) else {
                                metrics::backplane_error(BackplaneError::Decode);
                                continue;
                            };
                            let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                            // Never wait here: the library buffers what this
                            // task has not read, so it must read at once.
                            if inbound.try_send(Inbound { channel, payload }).is_err() {
                                metrics::backplane_dropped(Dropped::Inbound, 1);
                            }
                        }
                        None => break "the connection ended".to_string(),
                    },
                    _ = self.changed.notified() => dirty = true,
                    _ = self.reset.notified() => break "the canary found it silent".to_string(),
                    _ = stop.cancelled() => return,
                }
            };
            self.subscription.store(0, Ordering::Relaxed);
            // What other nodes published while this node was not subscribed
            // is lost to its clients: counted, so an alert can fire.
            metrics::backplane_error(BackplaneError::SubscriptionLost);
            let pause = backoff.next();
            tracing::warn!(reason = %why, retry_in = ?pause, "backplane: Redis subscription lost; resubscribing");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// An error Redis answered, as the kind it is counted as: a refused or
/// missing password is `auth`, reported as such rather than as a lost link.
fn kind_of(error: &EngineError) -> BackplaneError {
    if error.is_auth() {
        BackplaneError::Auth
    } else {
        BackplaneError::Subscribe
    }
}

/// Subscribes and unsubscribes in batches, each within the I/O timeout.
async fn reconcile(sink: &mut redis::aio::PubSubSink, add: &[String], remove: &[String]) -> Result<(), EngineError> {
    for chunk in add.chunks(SUBSCRIBE_BATCH) {
        let done = tokio::time::timeout(IO_TIMEOUT, sink.subscribe(chunk)).await;
        done.map_err(|_| EngineError::Timeout)??;
    }
    for chunk in remove.chunks(SUBSCRIBE_BATCH) {
        let done = tokio::time::timeout(IO_TIMEOUT, sink.unsubscribe(chunk)).await;
        done.map_err(|_| EngineError::Timeout)??;
    }
    Ok(())
}
