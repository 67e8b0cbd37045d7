//! TLS and mutual TLS on the admin port, with certificates made for the test.

mod common;

use common::pki::Pki;
use common::TestServer;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use wshub::admin::pb::{self, admin_client::AdminClient};

async fn tls_client(
    server: &TestServer,
    pki: &Pki,
    identity: Option<Identity>,
) -> Result<AdminClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.ca.pem()))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let endpoint = Endpoint::from_shared(format!("https://{}", server.admin))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(AdminClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_over_tls() {
    let pki = Pki::new("server");
    let (cert, key, _, _) = pki.leaf("localhost");
    let server = TestServer::with(|c| {
        c.admin_tls_cert = Some(cert);
        c.admin_tls_key = Some(key);
    })
    .await;
    let mut admin = tls_client(&server, &pki, None).await.expect("TLS connect");
    let stats = admin.get_stats(pb::GetStatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.clients, 0);
    // A plaintext client cannot talk to the TLS port.
    let plain = AdminClient::connect(format!("http://{}", server.admin)).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut client) => client.get_stats(pb::GetStatsRequest {}).await.is_err(),
    };
    assert!(refused, "plaintext call must fail on the TLS port");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_with_a_client_ca() {
    let pki = Pki::new("mtls");
    let (cert, key, _, _) = pki.leaf("localhost");
    let (_, _, client_cert, client_key) = pki.leaf("operator");
    let server = TestServer::with(|c| {
        c.admin_tls_cert = Some(cert);
        c.admin_tls_key = Some(key);
        c.admin_tls_client_ca = Some(pki.dir.join("ca.pem"));
    })
    .await;
    let anonymous = match tls_client(&server, &pki, None).await {
        Err(_) => true,
        Ok(mut client) => client.get_stats(pb::GetStatsRequest {}).await.is_err(),
    };
    assert!(anonymous, "a client without a certificate must be refused");
    let identity = Identity::from_pem(client_cert, client_key);
    let mut admin = tls_client(&server, &pki, Some(identity)).await.expect("mTLS connect");
    assert!(admin.get_stats(pb::GetStatsRequest {}).await.is_ok());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_admin_tls_handshake_is_logged_with_the_callers_address() {
    let pki = Pki::new("mtls-log");
    let (cert, key, _, _) = pki.leaf("localhost");
    let ca = pki.dir.join("ca.pem");
    let (cert, key, ca) = (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
        ca.to_str().unwrap().to_string(),
    );
    let node = common::Binary::spawn(&[
        "--admin-tls-cert",
        &cert,
        "--admin-tls-key",
        &key,
        "--admin-tls-client-ca",
        &ca,
    ])
    .await;
    // A caller without a client certificate.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca).unwrap()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", node.admin))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = channel {
        assert!(AdminClient::new(channel)
            .get_stats(pb::GetStatsRequest {})
            .await
            .is_err());
    }
    let line = node.log_line("admin: a TLS handshake failed").await;
    assert!(
        line.contains("caller=127.0.0.1:") && line.contains("failed=1"),
        "{line}"
    );
}
