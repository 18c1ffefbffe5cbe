//! Mutual TLS against the simulator served over HTTPS, with a CA, a server
//! certificate and a client certificate generated here.

mod support;

use portal_api::sim::{SimConfig, SimTls};
use portal_api::wire::TaskQuery;
use portal_api::{Client, ClientIdentity, NetworkErrorKind, Pem, PortalError};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use support::*;

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    other_client_cert: String,
    other_client_key: String,
}

fn issuer(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, ca).expect("sign");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let ca = issuer("portal-sync test CA");
    let (server_cert, server_key) = leaf(
        &ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) =
        leaf(&ca, &["portal-sync"], ExtendedKeyUsagePurpose::ClientAuth);
    let rogue = issuer("someone else");
    let (other_client_cert, other_client_key) =
        leaf(&rogue, &["intruder"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca_pem: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        other_client_cert,
        other_client_key,
    }
}

async fn mtls_sim(pki: &Pki) -> portal_api::sim::RunningSim {
    let mut config = SimConfig::new(KEY);
    config.tls = Some(SimTls {
        cert_chain_pem: pki.server_cert.clone().into_bytes(),
        key_pem: pki.server_key.clone().into_bytes(),
        client_ca_pem: Some(pki.ca_pem.clone().into_bytes()),
    });
    start_sim(config).await
}

fn https_url(sim: &portal_api::sim::RunningSim) -> String {
    format!("https://localhost:{}", sim.addr.port())
}

#[tokio::test]
async fn a_client_certificate_as_one_pem_file_is_accepted() {
    let pki = pki();
    let sim = mtls_sim(&pki).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let combined = dir.path().join("client.pem");
    std::fs::write(&combined, format!("{}{}", pki.client_cert, pki.client_key)).expect("write");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("write");
    let client = Client::new(
        client_config(&https_url(&sim))
            .with_ca_bundle(Pem::file(&ca))
            .with_client_identity(ClientIdentity::Combined(Pem::file(&combined))),
    )
    .expect("client");
    client
        .submit_tasks(&tasks("tls", 2))
        .await
        .expect("submit over mTLS");
    assert_eq!(
        client
            .list_tasks(&TaskQuery::default())
            .await
            .expect("list")
            .len(),
        2
    );
}

#[tokio::test]
async fn a_client_certificate_as_cert_and_key_files_is_accepted() {
    let pki = pki();
    let sim = mtls_sim(&pki).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("client.crt");
    let key = dir.path().join("client.key");
    std::fs::write(&cert, &pki.client_cert).expect("write");
    std::fs::write(&key, &pki.client_key).expect("write");
    let client = Client::new(
        client_config(&https_url(&sim))
            .with_ca_bundle(Pem::inline(pki.ca_pem.clone()))
            .with_client_identity(ClientIdentity::Split {
                cert: Pem::file(&cert),
                key: Pem::file(&key),
            }),
    )
    .expect("client");
    assert!(
        client
            .list_tasks(&TaskQuery::default())
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn without_a_client_certificate_the_portal_refuses_the_connection() {
    let pki = pki();
    let sim = mtls_sim(&pki).await;
    let client = Client::new(
        client_config(&https_url(&sim)).with_ca_bundle(Pem::inline(pki.ca_pem.clone())),
    )
    .expect("client");
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, PortalError::Network { .. }), "{err:?}");
    // A certificate from another CA is refused too.
    let client = Client::new(
        client_config(&https_url(&sim))
            .with_ca_bundle(Pem::inline(pki.ca_pem.clone()))
            .with_client_identity(ClientIdentity::Split {
                cert: Pem::inline(pki.other_client_cert.clone()),
                key: Pem::inline(pki.other_client_key.clone()),
            }),
    )
    .expect("client");
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("refused");
    assert!(matches!(err, PortalError::Network { .. }), "{err:?}");
    assert_eq!(sim.handle().stats().requests_to("GET /tasks"), 0);
}

#[tokio::test]
async fn a_server_certificate_from_an_unknown_ca_is_never_accepted() {
    let pki = pki();
    let sim = mtls_sim(&pki).await;
    // Right client certificate, but the test CA is not trusted.
    let client = Client::new(client_config(&https_url(&sim)).with_client_identity(
        ClientIdentity::Split {
            cert: Pem::inline(pki.client_cert.clone()),
            key: Pem::inline(pki.client_key.clone()),
        },
    ))
    .expect("client");
    let err = client
        .list_tasks(&TaskQuery::default())
        .await
        .expect_err("untrusted");
    assert!(
        matches!(
            err,
            PortalError::Network {
                kind: NetworkErrorKind::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn unreadable_tls_material_fails_when_building_the_client_naming_the_file() {
    let err = Client::new(client_config("https://localhost:1").with_client_identity(
        ClientIdentity::Combined(Pem::file("/nonexistent/client.pem")),
    ))
    .expect_err("missing file");
    assert!(err.to_string().contains("/nonexistent/client.pem"), "{err}");
    let err = Client::new(
        client_config("https://localhost:1")
            .with_client_identity(ClientIdentity::Combined(Pem::inline("not pem"))),
    )
    .expect_err("bad pem");
    assert!(matches!(err, PortalError::Config { .. }), "{err:?}");
    let err = Client::new(client_config("https://localhost:1").with_ca_bundle(Pem::inline("")))
        .expect_err("empty bundle");
    assert!(err.to_string().contains("ca_bundle"), "{err}");
}
