//! The deployment examples (`examples/deploy/`) say what the docs promise:
//! the Kubernetes manifests parse and fit together, the systemd unit is
//! hardened, the container's health check answers from `/readyz`, the
//! nginx example passes upgrades, and every alert links to its runbook.

mod common;

use serde_yaml_ng::Value;

fn yaml_documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    at.as_str().unwrap_or_else(|| panic!("{path:?} is not a string"))
}

#[test]
fn the_kubernetes_manifests_parse_and_fit_together() {
    let deployment = yaml_documents("examples/deploy/k8s/deployment.yaml").remove(0);
    assert_eq!(str_at(&deployment, &["kind"]), "Deployment");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let container = &pod["spec"]["containers"][0];
    let ports: Vec<(String, u64)> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| (str_at(p, &["name"]).to_string(), p["containerPort"].as_u64().unwrap()))
        .collect();
    let port = |name: &str| ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
    assert_eq!(port("ws"), Some(8080));
    assert_eq!(port("metrics"), Some(9464));
    // Readiness on /readyz (503 while draining), liveness on /healthz.
    assert_eq!(str_at(container, &["readinessProbe", "httpGet", "path"]), "/readyz");
    assert_eq!(str_at(container, &["readinessProbe", "httpGet", "port"]), "metrics");
    assert_eq!(str_at(container, &["livenessProbe", "httpGet", "path"]), "/healthz");
    // preStop drains, and the grace period outlasts the drain and the
    // shutdown grace (10 s).
    let command: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        command[0].ends_with("wshubctl") && command.contains(&"drain"),
        "{command:?}"
    );
    let deadline = command[command.iter().position(|c| *c == "--deadline").unwrap() + 1];
    let deadline = wshub::config::parse_duration(deadline).unwrap().as_secs();
    let grace = pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > deadline + 10, "{grace} s for a {deadline} s drain");
    // The token is read from the mounted secret, by the server and by the
    // drain alike.
    let token_file = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "WSHUB_ADMIN_TOKEN_FILE")
        .map(|e| str_at(e, &["value"]).to_string())
        .expect("the token from a file");
    assert!(command.contains(&token_file.as_str()), "{command:?}");
    let mount = str_at(&container["volumeMounts"][0], &["mountPath"]);
    assert!(token_file.starts_with(mount), "{token_file} under {mount}");

    // Every Service selects the pods and targets ports they have.
    let services = yaml_documents("examples/deploy/k8s/service.yaml");
    assert_eq!(services.len(), 2);
    for service in &services {
        assert_eq!(str_at(service, &["kind"]), "Service");
        for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(&labels[key.as_str().unwrap()], value, "selector {key:?}");
        }
        for p in service["spec"]["ports"].as_sequence().unwrap() {
            let target = str_at(p, &["targetPort"]);
            assert!(port(target).is_some(), "targetPort {target} is a container port");
        }
    }
    // The ServiceMonitor finds the ops Service and its metrics port.
    let monitor = yaml_documents("examples/deploy/k8s/servicemonitor.yaml").remove(0);
    assert_eq!(str_at(&monitor, &["kind"]), "ServiceMonitor");
    let wanted = monitor["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
    let ops: Vec<&Value> = services
        .iter()
        .filter(|s| {
            wanted
                .iter()
                .all(|(k, v)| &s["metadata"]["labels"][k.as_str().unwrap()] == v)
        })
        .collect();
    assert_eq!(ops.len(), 1, "one Service matches the ServiceMonitor");
    let endpoint = &monitor["spec"]["endpoints"][0];
    let scraped = str_at(endpoint, &["port"]);
    assert!(ops[0]["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p["name"] == scraped));
    assert_eq!(str_at(endpoint, &["path"]), "/metrics");
}

#[test]
fn the_systemd_unit_scores_below_3_in_systemd_analyze_security() {
    let unit = std::env::temp_dir().join(format!("wshub-{}.service", std::process::id()));
    std::fs::copy("examples/deploy/wshub.service", &unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs (scripts/test installs systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for ").nth(1))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    assert!(level < 3.0, "exposure {level}:\n{text}");
    let unit = std::fs::read_to_string("examples/deploy/wshub.service").unwrap();
    // The token reaches the dynamic user as a credential, not a readable file.
    assert!(unit.contains("LoadCredential=admin-token:/etc/wshub/admin-token"));
    assert!(unit.contains("WSHUB_ADMIN_TOKEN_FILE=%d/admin-token"));
}

#[test]
fn the_nginx_example_passes_upgrades_and_outlasts_the_pings() {
    let conf = std::fs::read_to_string("examples/deploy/nginx.conf").unwrap();
    for needed in [
        "map $http_upgrade $connection_upgrade",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_http_version 1.1;",
        "server_name ",
        "ssl_certificate ",
        "ssl_certificate_key ",
        "X-Forwarded-For $proxy_add_x_forwarded_for",
    ] {
        assert!(conf.contains(needed), "{needed}");
    }
    let timeout: u64 = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("proxy_read_timeout "))
        .and_then(|t| t.trim_end_matches(';').trim_end_matches('s').parse().ok())
        .unwrap();
    assert!(timeout > 25, "the idle timeout outlasts the 25 s ping interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_containers_health_check_follows_readyz() {
    let dockerfile = std::fs::read_to_string("examples/deploy/Dockerfile").unwrap();
    // The exec form after CMD, on the HEALTHCHECK's continuation line.
    let at = dockerfile.find("HEALTHCHECK").expect("a HEALTHCHECK");
    let json = &dockerfile[at..];
    let json = &json[json.find("CMD ").unwrap() + 4..];
    let json = &json[..json.find('\n').unwrap()];
    let argv: Vec<String> = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let server = common::TestServer::spawn().await;
    let port = server.metrics.port().to_string();
    let check = || {
        let argv: Vec<String> = argv.iter().map(|a| a.replace("9464", &port)).collect();
        std::process::Command::new(&argv[0]).args(&argv[1..]).status().unwrap()
    };
    assert!(check().success(), "healthy while ready");
    let mut admin = server.admin().await;
    let _drain = admin.drain(wshub::admin::pb::DrainRequest::default()).await.unwrap();
    common::redis::eventually(common::WAIT, "unhealthy once draining", || async { !check().success() }).await;
    server.stop().await;
}

#[test]
fn every_alert_links_to_its_runbook() {
    let rules = yaml_documents("grafana/alerts/wshub.rules.yml").remove(0);
    let operations = std::fs::read_to_string("docs/operations.md").unwrap();
    let mut n = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let Some(alert) = rule["alert"].as_str() else { continue };
            let url = str_at(rule, &["annotations", "runbook_url"]);
            let anchor = alert.to_lowercase();
            assert_eq!(url, format!("docs/operations.md#{anchor}"));
            assert!(
                operations.contains(&format!("<a id=\"{anchor}\"></a>")),
                "docs/operations.md has the {alert} runbook"
            );
            n += 1;
        }
    }
    assert!(n >= 13, "{n} alerts");
}
