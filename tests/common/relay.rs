//! A TCP relay to the test PostgreSQL server that can be cut, to take the
//! database away from a gateway without touching the machine's server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// A TCP relay to the test PostgreSQL server that can be cut: while it is
/// down, open links are closed and new ones are dropped on arrival, as when
/// the server stops or its host goes away.
pub struct Relay {
    pub address: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<JoinSet<()>>>,
    _accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        let accepting = tokio::spawn({
            let (up, links) = (up.clone(), links.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    links.lock().unwrap().spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Self {
            address,
            up,
            links,
            _accepting: accepting,
        }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.links.lock().unwrap().abort_all();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The test database's URL with the relay in place of the server.
pub fn through(url: &str, relay: SocketAddr) -> String {
    let (scheme_and_user, rest) = url.split_once('@').unwrap();
    let (_server, path) = rest.split_once('/').unwrap();
    format!("{scheme_and_user}@{relay}/{path}")
}
