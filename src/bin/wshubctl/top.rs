//! `wshubctl top`: a full-screen view refreshed every interval: the node's
//! stats, message and byte rates, and the clients with the deepest send
//! queues. `q`, Esc or Ctrl-C end it; the terminal is restored however it
//! ends (ratatui's panic hook covers a panic).

use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;
use tokio::sync::mpsc;
use wshub::admin::pb;

use crate::connect::Client;

/// How long one refresh's calls may take before the view says so.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// What one refresh found.
struct Sample {
    at: Instant,
    stats: pb::Stats,
    deepest: Vec<pb::ClientInfo>,
}

/// Per-second rates between two samples.
#[derive(Default)]
struct Rates {
    sent: f64,
    received: f64,
    bytes_sent: f64,
    bytes_received: f64,
}

impl Rates {
    fn between(before: &Sample, after: &Sample) -> Rates {
        let secs = (after.at - before.at).as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let (a, b) = (&before.stats, &after.stats);
        Rates {
            sent: rate(a.messages_sent, b.messages_sent),
            received: rate(a.messages_received, b.messages_received),
            bytes_sent: rate(a.bytes_sent, b.bytes_sent),
            bytes_received: rate(a.bytes_received, b.bytes_received),
        }
    }
}

pub async fn run(mut admin: Client, addr: String, interval: Duration) -> Result<(), String> {
    let mut terminal = ratatui::init();
    // Keys are read on a thread of their own (crossterm blocks); it ends
    // when this side hangs up.
    let (keys_tx, mut keys) = mpsc::channel(16);
    std::thread::spawn(move || {
        while !keys_tx.is_closed() {
            if let Ok(true) = event::poll(Duration::from_millis(100)) {
                match event::read() {
                    Ok(event) => {
                        if keys_tx.blocking_send(event).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    });
    let mut tick = tokio::time::interval(interval);
    let (mut previous, mut latest): (Option<Sample>, Option<Sample>) = (None, None);
    let mut error: Option<String> = None;
    let result = loop {
        let draw = terminal.draw(|frame| view(frame, &addr, previous.as_ref(), latest.as_ref(), error.as_deref()));
        if let Err(e) = draw {
            break Err(format!("cannot draw: {e}"));
        }
        tokio::select! {
            _ = tick.tick() => {
                let rows = terminal.size().map_or(20, |s| s.height.saturating_sub(12).max(1));
                match tokio::time::timeout(CALL_DEADLINE, sample(&mut admin, u32::from(rows))).await {
                    Ok(Ok(sample)) => {
                        previous = latest.replace(sample);
                        error = None;
                    }
                    Ok(Err(status)) => error = Some(status.message().to_string()),
                    Err(_) => error = Some(format!("no answer within {CALL_DEADLINE:?}")),
                }
            }
            key = keys.recv() => match key {
                Some(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        break Ok(());
                    }
                }
                Some(_) => {}
                None => break Err("lost the terminal's input".into()),
            },
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
    };
    ratatui::restore();
    result
}

async fn sample(admin: &mut Client, rows: u32) -> Result<Sample, tonic::Status> {
    let stats = admin.get_stats(pb::GetStatsRequest {}).await?.into_inner();
    let page = admin
        .list_clients(pb::ListClientsRequest {
            page_size: rows,
            order_by: pb::ClientOrder::QueueDepth as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Sample {
        at: Instant::now(),
        stats,
        deepest: page.clients,
    })
}

fn view(frame: &mut Frame, addr: &str, previous: Option<&Sample>, latest: Option<&Sample>, error: Option<&str>) {
    let [head, summary, table, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(6),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let Some(latest) = latest else {
        frame.render_widget(Line::from(format!("wshubctl top: connecting to {addr}...")), head);
        return;
    };
    let s = &latest.stats;
    let uptime = s.uptime.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default();
    let title = format!(
        "wshub {} on node {} at {addr}, up {}, {}",
        s.version,
        s.node,
        humantime::format_duration(Duration::from_secs(uptime.as_secs())),
        super::state(s)
    );
    frame.render_widget(Line::from(title).bold(), head);

    let rates = previous.map(|p| Rates::between(p, latest)).unwrap_or_default();
    let cluster = if s.nodes.len() > 1 {
        format!(
            "   nodes {}{}",
            s.nodes.len(),
            if s.partial { " (partial)" } else { "" }
        )
    } else {
        String::new()
    };
    let lines = vec![
        Line::from(format!("clients {:>10}   topics {:>8}{cluster}", s.clients, s.topics)),
        Line::from(format!(
            "hub queue {:>6} / {}   slow-consumer evictions {}",
            s.hub_queue_depth, s.hub_queue_capacity, s.slow_consumer_evictions
        )),
        Line::from(format!(
            "sent     {:>10.0} msg/s {:>12}/s   total {}",
            rates.sent,
            bytes(rates.bytes_sent),
            s.messages_sent
        )),
        Line::from(format!(
            "received {:>10.0} msg/s {:>12}/s   total {}",
            rates.received,
            bytes(rates.bytes_received),
            s.messages_received
        )),
    ];
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" node ")), summary);

    let header = Row::new(["ID", "USER", "REMOTE", "DEPTH", "QUEUED", "PEAK", "SENT", "TOPICS"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = latest.deepest.iter().map(|c| {
        Row::new([
            c.id.clone(),
            if c.user.is_empty() { "-".into() } else { c.user.clone() },
            c.remote_addr.clone(),
            c.queue_depth.to_string(),
            bytes(c.queue_bytes as f64),
            c.queue_high_water.to_string(),
            c.messages_sent.to_string(),
            c.topics.join(","),
        ])
    });
    let widths = [
        Constraint::Length(14),
        Constraint::Length(12),
        Constraint::Length(22),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Fill(1),
    ];
    let table_widget = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" deepest send queues "));
    frame.render_widget(table_widget, table);

    let status = match error {
        Some(e) => Line::from(format!("refresh failed: {e} (showing the last answer)")).red(),
        None => Line::from("q, Esc or Ctrl-C to quit").dim(),
    };
    frame.render_widget(status, foot);
}

/// `1.2 MB`: bytes for people.
fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut n = n;
    let mut unit = 0;
    while n >= 1000.0 && unit < UNITS.len() - 1 {
        n /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n:.0} {}", UNITS[unit])
    } else {
        format!("{n:.1} {}", UNITS[unit])
    }
}
