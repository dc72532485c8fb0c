//! Several gateways on one PostgreSQL database, with a Redis of the test's own
//! (so it can be killed and started again), each gateway on its own loopback
//! address (127.0.0.2, 127.0.0.3, …) and data directory, following one or
//! more plugin hosts (supervisors on 127.0.0.10, 127.0.0.11, …).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{
    DEADLINE, Supervisor,
    serve::{Corral, Db, TestDatabase},
};

/// Lease flags of the tests' gateways: short, so adoption shows within seconds.
pub const LEASE: [&str; 4] = ["--lease-ttl", "2s", "--lease-renew", "500ms"];
/// How long after a gateway died its tasks must have been adopted.
pub const ADOPTED_WITHIN: Duration = Duration::from_secs(2 + 3);

/// A `redis-server` of the test's own, keeping nothing on disk.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        let port = super::free_address()
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap();
        Self::start_on(port)
    }

    /// Starts one on `port` (again, after a kill).
    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "redis-server could not be started ({error}): install Redis \
                     (apt-get install redis-server); scripts/services checks it"
                )
            });
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// kill -9, and waits for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Plugin hosts, gateways on one PostgreSQL database, and a Redis.
pub struct Cluster {
    pub database: TestDatabase,
    pub redis: RedisServer,
    pub hosts: Vec<Supervisor>,
    pub gateways: Vec<Corral>,
    /// The database URL gateways started from now on get (e.g. through a relay).
    pub database_url: String,
    /// The channel prefix of this test on Redis.
    prefix: String,
    data_dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// `gateways` gateways following a supervisor of `folders`.
    pub async fn start(folders: &[&Path], gateways: usize) -> Self {
        Self::start_hosts(folders, 1, gateways).await
    }

    /// `gateways` gateways following `hosts` supervisors of `folders`.
    pub async fn start_hosts(folders: &[&Path], hosts: usize, gateways: usize) -> Self {
        let database = TestDatabase::new(Db::Postgres).await;
        let hosts = (0..hosts)
            .map(|index| {
                Supervisor::start_at(&format!("127.0.0.{}:0", index + 10), folders, &[], &[])
            })
            .collect();
        let mut cluster = Self {
            database_url: database.url.clone().unwrap(),
            database,
            redis: RedisServer::start(),
            hosts,
            gateways: Vec::new(),
            prefix: format!("test-{:016x}", rand_u64()),
            data_dirs: Vec::new(),
        };
        for _ in 0..gateways {
            cluster.add_gateway(&[]);
        }
        cluster
    }

    /// Starts one more gateway (on the next loopback address) with `extra`
    /// flags; returns its index.
    pub fn add_gateway(&mut self, extra: &[&str]) -> usize {
        let index = self.gateways.len();
        let data_dir = tempfile::tempdir().unwrap();
        let mut command = self.gateway_command(index, data_dir.path());
        command.args(extra);
        self.gateways.push(Corral::start_command(command));
        self.data_dirs.push(data_dir);
        index
    }

    /// The command of gateway `index`, on 127.0.0.<index + 2>.
    pub fn gateway_command(&self, index: usize, data_dir: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
        command
            .args(["gateway", "--http", &format!("127.0.0.{}:0", index + 2)])
            .args(["--supervisor", &self.supervisor_urls()])
            .args(["--database-url", &self.database_url])
            .args([
                "--redis-url",
                &self.redis.url(),
                "--redis-prefix",
                &self.prefix,
                "--discover-hosts",
            ])
            .args(LEASE)
            .arg("--data-dir")
            .arg(data_dir)
            .env("CORRAL_ADMIN_TOKEN", super::ADMIN_TOKEN);
        command
    }

    /// The test's prefix on Redis.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every host's supervisor URL, comma-separated.
    pub fn supervisor_urls(&self) -> String {
        let urls: Vec<String> = self.hosts.iter().map(Supervisor::url).collect();
        urls.join(",")
    }

    /// Waits until every gateway lists `identifiers`.
    pub async fn wait_for_plugins(&self, identifiers: &[&str]) {
        for gateway in &self.gateways {
            gateway.wait_for_plugins(identifiers).await;
        }
    }
}

/// `url` (a task's, a file's) on gateway `to` instead of the one that made it.
pub fn on(to: &Corral, url: &str) -> String {
    let path = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path)
        .unwrap();
    to.url(&format!("/{path}"))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}
