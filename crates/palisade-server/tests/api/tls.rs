//! HTTPS with a certificate made in the test: a client that trusts it gets
//! answers; one that does not is refused by the TLS handshake.

use palisade_client::{Client, ClientConfig};
use palisade_server::TlsFiles;

use crate::common::*;

#[tokio::test]
async fn tls_round_trip_with_a_self_signed_certificate() {
    let mut t = TestServer::start_with(false, |_| {}).await;
    t.stop().await;
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate a certificate");
    let dir = t.dir.path().to_path_buf();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    t.start(|c| {
        c.tls = Some(TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        })
    })
    .await;
    let url = t.url();
    assert!(url.starts_with("https://"), "{url}");

    let trusted = Client::new(&ClientConfig {
        servers: vec![url.clone()],
        token: None,
        ca_file: Some(dir.join("cert.pem")),
    })
    .unwrap();
    let applied = trusted.apply(vec![tenant("acme")]).await.unwrap();
    assert_eq!(trusted.status().await.unwrap().revision, applied.revision);

    let untrusting = Client::new(&ClientConfig::for_server(&url, None)).unwrap();
    let err = untrusting.status().await.unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");

    // Plain HTTP to the TLS port gets no answer either.
    let plain = Client::new(&ClientConfig::for_server(
        &url.replace("https", "http"),
        None,
    ))
    .unwrap();
    assert!(plain.status().await.is_err());
    t.stop().await;
}
