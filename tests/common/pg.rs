//! PostgreSQL for tests: a database of each test's own on the server `WBSESSIONS_TEST_POSTGRES`
//! names, dropped afterwards, and a TCP relay the test controls to cut connections (the shared
//! server itself is never stopped).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The variable that names the server, as an admin URL (`postgres://postgres@127.0.0.1:5432/postgres`).
pub const VARIABLE: &str = "WBSESSIONS_TEST_POSTGRES";

/// A database of its own for one test.
pub struct TestPg {
    admin: String,
    pub name: String,
    /// The database's URL, for `--store`.
    pub url: String,
}

impl TestPg {
    /// `None`, after one SKIPPED line for the test binary, where no server is named. The line
    /// goes straight to stderr, past the test harness's capture, so that it is seen.
    pub fn new(group: &str) -> Option<TestPg> {
        let Some(admin) = std::env::var(VARIABLE).ok().filter(|v| !v.is_empty()) else {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {group} tests: {VARIABLE} is not set (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
                );
            });
            return None;
        };
        let name = format!("wbs_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("{VARIABLE} is set but its server cannot be reached: {e}"));
        client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = TestPg::url_to(&admin, &name, None);
        Some(TestPg { admin, name, url })
    }

    /// This database's URL, reached at `via` (a relay's address) if given.
    fn url_to(admin: &str, name: &str, via: Option<std::net::SocketAddr>) -> String {
        let mut url = url::Url::parse(admin).unwrap();
        url.set_path(name);
        if let Some(via) = via {
            url.set_host(Some(&via.ip().to_string())).unwrap();
            url.set_port(Some(via.port())).unwrap();
        }
        url.to_string()
    }

    /// The database's URL through `relay`.
    pub fn url_via(&self, relay: &Relay) -> String {
        TestPg::url_to(&self.admin, &self.name, Some(relay.address))
    }

    /// The server's address, for a relay to forward to.
    pub fn server(&self) -> String {
        let url = url::Url::parse(&self.admin).unwrap();
        format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(5432))
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// A TCP relay to the server: `cut` closes every connection through it and refuses new ones
/// until `restore`.
pub struct Relay {
    pub address: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn to(server: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (open_t, streams_t, server) = (open.clone(), streams.clone(), server.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !open_t.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&server) else { continue };
                // Without it, every small statement waits out Nagle and a delayed ACK (40 ms).
                let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                let pairs = [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)];
                for (mut from, mut to) in pairs {
                    streams_t.lock().unwrap().push(from.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { address, open, streams }
    }

    /// Every connection through the relay is closed; new ones are refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
