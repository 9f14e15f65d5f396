//! `segl-load`: a closed-loop HTTP load generator for Segl's token endpoint
//! (`POST {issuer}/connect/token`, `grant_type=client_credentials`, `private_key_jwt`).
//!
//! # What it measures
//!
//! `--concurrency N` tasks each loop: take the next pre-signed client assertion, POST it, check
//! for status 200 and an `access_token` in the JSON body, record the latency (send to last body
//! byte). A new request starts only when the task's previous one has finished (closed loop), so
//! the offered load adapts to the server. One probe request is sent first, alone: if it does not
//! get a token, the tool stops there and prints the server's answer. A warm-up (`--warmup`, not
//! counted) opens the connections and warms the server. The timed phase then stops at
//! `--requests` requests or after `--duration` seconds, whichever comes first; in-flight
//! requests are allowed to finish (each request has a 5 s timeout), and the elapsed time runs
//! until the last one has.
//!
//! The exit status is 0 when the timed phase got at least one token (errors are reported, not
//! fatal), and non-zero otherwise or when the probe fails.
//!
//! # Several targets
//!
//! `--issuer` may be given several times (several servers, each with its own issuer), or once
//! with `--target URL` given several times (several processes of one server that share its
//! issuer, e.g. `segl serve --listen` on different ports with one configuration): the requests
//! then go round-robin over the targets, per request, so every target gets an equal share of
//! the requests. The assertion's `aud` and the DPoP proof's `htu` name the target's issuer; with
//! `--target` the connection goes to the target's address instead. Every target gets its own
//! probe request, and the report gives tokens, errors and latency per target besides the
//! aggregate. `--server-pid` may be given once per server process: the server CPU time is then
//! the sum over those processes (and the memory figures the sums of theirs).
//!
//! # DPoP nonces
//!
//! With `--dpop`, the server's nonce is fetched per target before pre-signing and then followed
//! per target: every answer's `DPoP-Nonce` header updates that target's nonce, and a request
//! answered `use_dpop_nonce` is sent once more with a freshly signed assertion and proof carrying
//! the target's latest nonce (counted as a nonce retry; its latency runs from the first send).
//! Processes of one Segl derive the same nonce from a shared secret, but the generator does not
//! rely on that.
//!
//! Reported: requests done, errors by kind (HTTP status, `transport`, `no_access_token`),
//! tokens/s (successful responses per second of the timed phase), latency p50/p90/p99/max in
//! milliseconds (nearest rank, successful requests only), this process's CPU use, and, with
//! `--server-pid PID`, the server's CPU time during the timed phase (utime + stime of
//! `/proc/PID/stat`, all threads) and that time divided by the tokens issued (µs/token).
//! `/proc` counts CPU time in clock ticks; the tick rate is `sysconf(_SC_CLK_TCK)` (through
//! `rustix`, which takes it from the kernel's auxiliary vector; 100 on Linux). At 100 Hz a
//! reading is exact to 10 ms, so keep runs long enough that this does not matter: at 10 s of
//! runtime the error is at most 0.1% of a core.
//!
//! # Assertions
//!
//! Each client assertion's `jti` may be used once, and an assertion lives at most 60 s. All
//! `1 + --warmup + --requests` assertions are therefore signed before the clock starts (on all
//! cores), with `iat = nbf = now` and `exp = now + 60`, and a run whose timed phase could end
//! after the assertions expire is refused: `--duration` is at most 40 s, and the run is
//! aborted before the timed phase if pre-signing and warm-up left too little time. The request
//! bodies are encoded ahead of time too, so the measuring loop does only HTTP.
//!
//! # Where it is run
//!
//! The runtime has a single thread (a current-thread tokio runtime), so the generator occupies
//! at most one core. With `--pin-cpu N` the process pins itself to CPU `N` once pre-signing
//! (which uses every core) is done; `bench/run.sh` pins it to a core other than the server's.
//! HTTP/1.1 with keep-alive: one pooled connection per task. Proxies from the environment are
//! ignored and redirects are not followed.
//!
//! # What it refuses
//!
//! Any `--issuer` or `--target` whose host is not a loopback address (`127.0.0.0/8`, `[::1]`, or
//! `localhost` resolving only to loopback addresses): this tool loads servers on this machine
//! only. Also refused: a concurrency outside 1..=1024, more than 1 000 000 requests, a duration
//! outside (0, 40] seconds, more than 64 targets.

mod ceiling;

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Lifetime of a client assertion (`exp - iat`), seconds. The server accepts at most 60.
const ASSERTION_LIFETIME: u64 = 60;
/// The longest accepted `--duration`, seconds.
const MAX_DURATION: f64 = 40.0;
/// Per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Margin kept between the end of the timed phase and the assertions' expiry, seconds.
const EXPIRY_MARGIN: u64 = 3;
/// The most targets one run loads.
const MAX_TARGETS: usize = 64;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    name = "segl-load",
    version,
    about = "Closed-loop load generator for Segl's client_credentials token endpoint (loopback only)"
)]
struct Args {
    /// The server's issuer URL; the assertion's `aud`. Must be a loopback address. Give it
    /// several times to load several servers round-robin (each request goes to the next one).
    #[arg(long, required = true)]
    issuer: Vec<String>,
    /// Send the requests to this base URL instead of the issuer's (loopback only), e.g. one of
    /// several processes sharing the one `--issuer`; give it several times to go round-robin
    /// over them. The assertion's `aud` and the DPoP proof's `htu` stay the issuer's.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// The client's `client_id`.
    #[arg(long)]
    client_id: String,
    /// The client's private JWK file (e.g. from `segl keys generate`).
    #[arg(long)]
    key: PathBuf,
    /// The `scope` to request (omitted from the request if not given).
    #[arg(long)]
    scope: Option<String>,
    /// Concurrent requests (tasks, each with its own keep-alive connection).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Most requests in the timed phase.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Most seconds in the timed phase (at most 40).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up requests before the timed phase (not counted).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// The server's process id: report its CPU time during the timed phase. Give it once per
    /// server process: the CPU times are summed.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// A database server's main process (e.g. PostgreSQL's postmaster): report the CPU time of
    /// it and its child processes (the backends) during the timed phase.
    #[arg(long)]
    db_pid: Option<u32>,
    /// After pre-signing (on all cores), pin this process to this CPU for the measured run.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// Print one JSON object line instead of the human-readable block.
    #[arg(long)]
    json: bool,
    /// Send a DPoP proof (ES256, one key) with every request, with the server's nonce (fetched
    /// per target before pre-signing, then followed: a `use_dpop_nonce` answer is retried once
    /// with the target's latest nonce).
    #[arg(long)]
    dpop: bool,
    /// The token endpoint's path below the issuer (Segl: /connect/token; oidc-provider: /token).
    #[arg(long, default_value = segl_proto::paths::TOKEN)]
    token_path: String,
    /// The `kid` in the assertion header (default: the key's RFC 7638 thumbprint).
    #[arg(long)]
    kid: Option<String>,
    /// The assertion's `typ` header.
    #[arg(long, default_value = segl_proto::typ::CLIENT_AUTHENTICATION)]
    assertion_typ: String,
    /// A `resource` parameter (RFC 8707) sent with every request.
    #[arg(long)]
    resource: Option<String>,
    /// Measure the crypto ceiling on this CPU (the server's) just before the warm-up and after
    /// the timed phase, and report the ratios (see `ceiling.rs`).
    #[arg(long)]
    ceiling_cpu: Option<usize>,
    /// Timed samples per operation for the ceiling (the median is used).
    #[arg(long, default_value_t = 201)]
    ceiling_samples: usize,
}

/// A pre-signed request: the form body and, with `--dpop`, the proof.
type Prepared = (String, Option<String>);

/// A pre-signed request and the index of the target it is for.
type Job = (usize, Prepared);

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        (1..=1024).contains(&args.concurrency),
        "--concurrency must be 1..=1024"
    );
    ensure!(
        (1..=1_000_000).contains(&args.requests),
        "--requests must be 1..=1000000"
    );
    ensure!(
        args.duration > 0.0 && args.duration <= MAX_DURATION,
        "--duration must be in (0, {MAX_DURATION}] seconds: each assertion is valid for {ASSERTION_LIFETIME} s and all are signed before the run"
    );
    ensure!(args.warmup <= 100_000, "--warmup must be at most 100000");
    ensure!(
        (1..=100_000).contains(&args.ceiling_samples),
        "--ceiling-samples must be 1..=100000"
    );
    ensure!(
        args.token_path.starts_with('/'),
        "--token-path must start with /"
    );
    let targets = parse_targets(&args)?;
    let n = targets.len();

    let clk_tck = clock_ticks_per_second();
    ensure!(
        args.server_pid.len() <= MAX_TARGETS,
        "--server-pid: at most {MAX_TARGETS}"
    );
    for pid in args.server_pid.iter().chain(&args.db_pid) {
        cpu_ticks(&format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid}: cannot read its CPU time"))?;
    }

    let jwk_text =
        std::fs::read(&args.key).with_context(|| format!("cannot read {}", args.key.display()))?;
    let jwk = segl_jose::Jwk::from_json(&jwk_text)
        .with_context(|| format!("{}: not a JWK", args.key.display()))?;
    let key = segl_jose::SigningKey::from_private_jwk(&jwk, None)
        .with_context(|| format!("{}: not a usable private key", args.key.display()))?;
    let creds = Credentials {
        client_id: args.client_id.clone(),
        scope: args.scope.clone(),
        resource: args.resource.clone(),
        kid: args.kid.clone().unwrap_or_else(|| key.kid().to_owned()),
        typ: args.assertion_typ.clone(),
        key,
        dpop_key: if args.dpop {
            Some(segl_jose::SigningKey::generate(segl_jose::Alg::ES256)?)
        } else {
            None
        },
    };

    // Pre-sign every assertion (per target: a probe, its share of the warm-up and of the timed
    // phase), before any timing.
    let per_target = 1 + args.warmup.div_ceil(n) + args.requests.div_ceil(n);
    let presign_started = std::time::Instant::now();
    let iat = unix_now()?;
    if let Some(dpop_key) = &creds.dpop_key {
        for target in &targets {
            let body = creds.template(target, None, iat).body(&creds.key)?;
            let nonce = fetch_nonce(&target.url, &target.htu, dpop_key, body)?;
            target.set_initial_nonce(nonce);
        }
    }
    let first = targets
        .first()
        .ok_or_else(|| anyhow!("no target (give --issuer)"))?;
    // One more assertion and proof, never sent: the inputs of the ceiling measurement.
    let first_nonce = first.nonce();
    let sample = creds.template(first, first_nonce.as_deref(), iat);
    let sample_assertion = sample.assertion(&creds.key)?;
    let sample_proof = sample.proof()?;
    let mut probes = Vec::with_capacity(n);
    let mut warmup_parts = Vec::with_capacity(n);
    let mut timed_parts = Vec::with_capacity(n);
    let mut threads = 1;
    for (index, target) in targets.iter().enumerate() {
        let nonce = target.nonce();
        let template = creds.template(target, nonce.as_deref(), iat);
        let (bodies, used) = presign(&creds.key, &template, per_target)?;
        threads = used;
        let mut bodies = bodies.into_iter();
        let probe = bodies.next().ok_or_else(|| anyhow!("nothing was signed"))?;
        probes.push((index, probe));
        warmup_parts.push(
            bodies
                .by_ref()
                .take(args.warmup.div_ceil(n))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        timed_parts.push(bodies);
    }
    let warmup_jobs = interleave(warmup_parts, args.warmup);
    let timed_jobs = interleave(timed_parts, args.requests);
    let presign_secs = presign_started.elapsed().as_secs_f64();
    let presigned = n * per_target;
    let expires = iat + ASSERTION_LIFETIME;
    let home = rustix::thread::sched_getaffinity(None).context("cannot read the CPU affinity")?;
    if let Some(cpu) = args.pin_cpu {
        pin_to_cpu(cpu)?;
    }
    let ceiling = match args.ceiling_cpu {
        None => None,
        Some(cpu) => {
            let proof = match (sample_proof, &creds.dpop_key) {
                (Some(proof), Some(dpop_key)) => Some(ceiling::ProofInput {
                    proof,
                    key: dpop_key.verifying_key()?,
                    url: first.htu.clone(),
                    iat: i64::try_from(iat).unwrap_or(i64::MAX),
                }),
                _ => None,
            };
            Some(CeilingSpec {
                cpu,
                samples: args.ceiling_samples,
                inputs: ceiling::Inputs {
                    assertion: sample_assertion,
                    assertion_key: creds.key.verifying_key()?,
                    proof,
                },
                home: match args.pin_cpu {
                    Some(c) => {
                        let mut set = rustix::thread::CpuSet::new();
                        set.set(c);
                        set
                    }
                    None => home,
                },
            })
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let run = Run {
        shared: Arc::new(Shared { targets, creds }),
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration),
        clk_tck,
        server_pids: args.server_pid.clone(),
        db_pid: args.db_pid,
        ceiling,
    };
    let report = runtime.block_on(run.execute(probes, warmup_jobs, timed_jobs, expires))?;
    let report = Report {
        presigned,
        presign_secs,
        presign_threads: threads,
        ..report
    };
    if args.json {
        println!("{}", report.to_json(&args, clk_tck));
    } else {
        print!("{}", report.human(&args, clk_tck));
    }
    ensure!(report.ok > 0, "no request of the timed phase got a token");
    Ok(())
}

/// One server (or one process of a server) the load goes to.
struct Target {
    /// The issuer, as given: the assertion's `aud`.
    issuer: String,
    /// Where the requests go: the token endpoint at the target's address.
    url: reqwest::Url,
    /// The DPoP proof's `htu`: the token endpoint below the issuer.
    htu: String,
    /// The target's latest DPoP nonce.
    nonce: Mutex<NonceState>,
}

/// A target's latest DPoP nonce, and how often it changed after the first.
#[derive(Default)]
struct NonceState {
    current: Option<String>,
    changes: u64,
}

impl Target {
    fn new(issuer: &str, url: reqwest::Url, htu: &reqwest::Url) -> Target {
        Target {
            issuer: issuer.to_owned(),
            url,
            htu: htu.to_string(),
            nonce: Mutex::new(NonceState::default()),
        }
    }

    /// The target's latest nonce.
    fn nonce(&self) -> Option<String> {
        self.nonce.lock().ok().and_then(|s| s.current.clone())
    }

    /// The nonce fetched before pre-signing (not counted as a change).
    fn set_initial_nonce(&self, nonce: Option<String>) {
        if let Ok(mut s) = self.nonce.lock() {
            s.current = nonce;
        }
    }

    /// Takes the nonce of an answer (`DPoP-Nonce`) as the target's latest.
    fn follow(&self, nonce: &str) {
        if let Ok(mut s) = self.nonce.lock()
            && s.current.as_deref() != Some(nonce)
        {
            s.current = Some(nonce.to_owned());
            s.changes += 1;
        }
    }

    fn nonce_changes(&self) -> u64 {
        self.nonce.lock().map_or(0, |s| s.changes)
    }
}

/// The token endpoint below `base` (an issuer or a target), which must be a loopback address.
fn endpoint(base: &str, token_path: &str, flag: &str) -> Result<reqwest::Url> {
    let trimmed = base.trim_end_matches('/');
    let url = reqwest::Url::parse(&format!("{trimmed}{token_path}"))
        .with_context(|| format!("{flag} {base}: not a URL"))?;
    require_loopback(&url).with_context(|| format!("{flag} {base}"))?;
    Ok(url)
}

/// The targets: one per `--issuer`, or, with `--target`, one per target, all for the one issuer.
fn parse_targets(args: &Args) -> Result<Vec<Target>> {
    ensure!(!args.issuer.is_empty(), "give --issuer");
    ensure!(
        args.targets.is_empty() || args.issuer.len() == 1,
        "--target is for processes that share one issuer: give --issuer once with it"
    );
    ensure!(
        args.issuer.len().max(args.targets.len()) <= MAX_TARGETS,
        "at most {MAX_TARGETS} targets"
    );
    let mut targets = Vec::new();
    for issuer in &args.issuer {
        let htu = endpoint(issuer, &args.token_path, "--issuer")?;
        if args.targets.is_empty() {
            targets.push(Target::new(issuer, htu.clone(), &htu));
        }
        for base in &args.targets {
            let url = endpoint(base, &args.token_path, "--target")?;
            targets.push(Target::new(issuer, url, &htu));
        }
    }
    Ok(targets)
}

/// Takes `count` requests from the targets' lists in turn (round-robin: request `i` is for
/// target `i mod n`).
fn interleave(mut parts: Vec<std::vec::IntoIter<Prepared>>, count: usize) -> Vec<Job> {
    let n = parts.len().max(1);
    let mut jobs = Vec::with_capacity(count);
    for i in 0..count {
        let target = i % n;
        if let Some(prepared) = parts.get_mut(target).and_then(Iterator::next) {
            jobs.push((target, prepared));
        }
    }
    jobs
}

/// The client's identity and keys, for signing assertions and proofs.
struct Credentials {
    client_id: String,
    scope: Option<String>,
    resource: Option<String>,
    /// The assertion header's `kid` and `typ`.
    kid: String,
    typ: String,
    /// The client's key.
    key: segl_jose::SigningKey,
    /// The DPoP proof key, with `--dpop`.
    dpop_key: Option<segl_jose::SigningKey>,
}

impl Credentials {
    /// What the requests to `target` share, with the DPoP `nonce` and `iat`.
    fn template<'a>(
        &'a self,
        target: &'a Target,
        nonce: Option<&'a str>,
        iat: u64,
    ) -> BodyTemplate<'a> {
        BodyTemplate {
            client_id: &self.client_id,
            aud: &target.issuer,
            scope: self.scope.as_deref(),
            resource: self.resource.as_deref(),
            kid: &self.kid,
            typ: &self.typ,
            iat,
            dpop: self
                .dpop_key
                .as_ref()
                .map(|k| (k, target.htu.as_str(), nonce)),
        }
    }

    /// A fresh assertion and proof for `target` with its latest nonce, signed now.
    fn resign(&self, target: &Target) -> Result<Prepared> {
        let nonce = target.nonce();
        self.template(target, nonce.as_deref(), unix_now()?)
            .prepared(&self.key)
    }
}

/// What the measuring tasks share.
struct Shared {
    targets: Vec<Target>,
    creds: Credentials,
}

/// Asks the server for its current DPoP nonce: a request with a proof and no nonce is answered
/// with a `DPoP-Nonce` header (servers that do not use nonces answer without one).
/// The request is a complete one (`body` has its own assertion): some servers check the proof
/// only after the client is authenticated. It is sent to `url`, with a proof for `htu`.
fn fetch_nonce(
    url: &reqwest::Url,
    htu: &str,
    key: &segl_jose::SigningKey,
    body: String,
) -> Result<Option<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let now = i64::try_from(unix_now()?).unwrap_or(i64::MAX);
    let proof = segl_jose::dpop::create_proof(key, "POST", htu, now, None, None)?;
    runtime.block_on(async {
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?
            .post(url.clone())
            .header("dpop", proof)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        Ok(response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    })
}

/// Refuses a URL whose host is not a loopback address.
fn require_loopback(url: &reqwest::Url) -> Result<()> {
    ensure!(
        matches!(url.scheme(), "http" | "https"),
        "the URL must be http:// or https://"
    );
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("the URL has no host"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        ensure!(
            ip.is_loopback(),
            "host {host} is not a loopback address: segl-load only loads servers on this machine"
        );
        return Ok(());
    }
    ensure!(
        bare.eq_ignore_ascii_case("localhost"),
        "host {host} is not a loopback address (use 127.0.0.1, [::1] or localhost): segl-load only loads servers on this machine"
    );
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<_> = (bare, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    ensure!(
        !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
        "{host} resolves to a non-loopback address ({addrs:?}): refused"
    );
    Ok(())
}

/// The current Unix time in seconds: the one place that reads the wall clock.
#[allow(clippy::disallowed_methods)]
fn unix_now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}

/// What every request body shares.
struct BodyTemplate<'a> {
    client_id: &'a str,
    aud: &'a str,
    scope: Option<&'a str>,
    resource: Option<&'a str>,
    /// The assertion header's `kid` and `typ`.
    kid: &'a str,
    typ: &'a str,
    iat: u64,
    /// With `--dpop`: the proof key, the token endpoint URL and the server nonce.
    dpop: Option<(&'a segl_jose::SigningKey, &'a str, Option<&'a str>)>,
}

impl BodyTemplate<'_> {
    /// A form body with a freshly signed assertion (a new random `jti`) and, with `--dpop`, a
    /// fresh proof.
    fn prepared(&self, key: &segl_jose::SigningKey) -> Result<Prepared> {
        Ok((self.body(key)?, self.proof()?))
    }

    /// With `--dpop`, a fresh proof (a new random `jti`).
    fn proof(&self) -> Result<Option<String>> {
        Ok(match self.dpop {
            Some((dpop_key, url, nonce)) => Some(segl_jose::dpop::create_proof(
                dpop_key,
                "POST",
                url,
                i64::try_from(self.iat).unwrap_or(i64::MAX),
                nonce,
                None,
            )?),
            None => None,
        })
    }

    /// A freshly signed client assertion (a new random `jti`), with this template's `kid` and
    /// `typ` in the header.
    fn assertion(&self, key: &segl_jose::SigningKey) -> Result<String> {
        let mut jti = [0u8; 16];
        segl_jose::random_bytes(&mut jti)?;
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.aud,
            "iat": self.iat,
            "nbf": self.iat,
            "exp": self.iat + ASSERTION_LIFETIME,
            "jti": segl_jose::b64_encode(jti),
        });
        let header = serde_json::json!({"alg": key.alg().name(), "typ": self.typ, "kid": self.kid});
        let mut jws = segl_jose::b64_encode(header.to_string());
        jws.push('.');
        jws.push_str(&segl_jose::b64_encode(claims.to_string()));
        let signature = key.sign(jws.as_bytes())?;
        jws.push('.');
        jws.push_str(&segl_jose::b64_encode(signature));
        Ok(jws)
    }

    /// A complete form body with a freshly signed assertion (a new random `jti`).
    fn body(&self, key: &segl_jose::SigningKey) -> Result<String> {
        let assertion = self.assertion(key)?;
        let mut form =
            form_urlencoded::Serializer::new(String::with_capacity(assertion.len() + 256));
        form.append_pair("grant_type", segl_proto::grant::CLIENT_CREDENTIALS)
            .append_pair("client_id", self.client_id)
            .append_pair(
                "client_assertion_type",
                segl_proto::CLIENT_ASSERTION_TYPE_JWT_BEARER,
            )
            .append_pair("client_assertion", &assertion);
        if let Some(scope) = self.scope {
            form.append_pair("scope", scope);
        }
        if let Some(resource) = self.resource {
            form.append_pair("resource", resource);
        }
        Ok(form.finish())
    }
}

/// Signs `count` requests on all cores; returns them and the number of threads used.
fn presign(
    key: &segl_jose::SigningKey,
    template: &BodyTemplate<'_>,
    count: usize,
) -> Result<(Vec<Prepared>, usize)> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, count.max(1));
    let per_thread = count.div_ceil(threads);
    let chunks: Vec<Result<Vec<Prepared>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let n = per_thread.min(count.saturating_sub(i * per_thread));
                s.spawn(move || (0..n).map(|_| template.prepared(key)).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a signing thread panicked")))
            })
            .collect()
    });
    let mut bodies = Vec::with_capacity(count);
    for chunk in chunks {
        bodies.extend(chunk.context("cannot sign a client assertion")?);
    }
    Ok((bodies, threads))
}

/// The run's fixed parameters.
struct Run {
    shared: Arc<Shared>,
    concurrency: usize,
    duration: Duration,
    clk_tck: u64,
    server_pids: Vec<u32>,
    db_pid: Option<u32>,
    ceiling: Option<CeilingSpec>,
}

/// What the ceiling measurement needs besides the probe's token.
struct CeilingSpec {
    /// The CPU to measure on (the server's).
    cpu: usize,
    /// Samples per operation.
    samples: usize,
    /// A client assertion and (with DPoP) a proof, never sent, and their keys.
    inputs: ceiling::Inputs,
    /// The CPUs to return to after measuring.
    home: rustix::thread::CpuSet,
}

impl CeilingSpec {
    /// Pins this thread to the measuring CPU, measures, and pins it back.
    fn measure(&self, token: &ceiling::Token) -> Result<ceiling::Costs> {
        pin_to_cpu(self.cpu)?;
        let costs = self.inputs.measure(token, self.samples);
        rustix::thread::sched_setaffinity(None, &self.home)
            .context("cannot restore the CPU affinity")?;
        costs
    }
}

/// What one phase (warm-up or timed) produced.
#[derive(Default)]
struct Outcome {
    /// Per target.
    targets: Vec<TargetOutcome>,
    /// Failures that belong to no one target (a task that failed or was aborted), by kind.
    errors: BTreeMap<String, u64>,
    /// Bodies left unsent (the phase stopped on time).
    unsent: usize,
}

/// What one phase produced at one target.
#[derive(Default, Clone)]
struct TargetOutcome {
    /// Latencies of successful requests, microseconds.
    latencies_us: Vec<u64>,
    /// Failed requests by kind.
    errors: BTreeMap<String, u64>,
    /// Requests answered `use_dpop_nonce` and sent again with the target's latest nonce.
    nonce_retries: u64,
}

/// Adds `from`'s counts to `into`'s.
fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Outcome {
    fn new(targets: usize) -> Outcome {
        Outcome {
            targets: vec![TargetOutcome::default(); targets],
            ..Outcome::default()
        }
    }

    fn merge(&mut self, other: Outcome) {
        for (mine, theirs) in self.targets.iter_mut().zip(other.targets) {
            mine.latencies_us.extend(theirs.latencies_us);
            add_counts(&mut mine.errors, &theirs.errors);
            mine.nonce_retries += theirs.nonce_retries;
        }
        add_counts(&mut self.errors, &other.errors);
    }

    /// Failed requests by kind, over all targets.
    fn all_errors(&self) -> BTreeMap<String, u64> {
        let mut all = self.errors.clone();
        for t in &self.targets {
            add_counts(&mut all, &t.errors);
        }
        all
    }

    fn error_count(&self) -> u64 {
        self.all_errors().values().sum()
    }
}

/// The results.
#[derive(Default)]
struct Report {
    presigned: usize,
    presign_secs: f64,
    presign_threads: usize,
    warmup_done: usize,
    warmup_errors: u64,
    elapsed_secs: f64,
    stopped_by: &'static str,
    ok: usize,
    errors: BTreeMap<String, u64>,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The servers' CPU time during the timed phase, summed over `--server-pid`s.
    server_cpu_secs: Option<f64>,
    client_cpu_secs: Option<f64>,
    /// With `--db-pid`: the database's CPU time (main process and children).
    db_cpu_secs: Option<f64>,
    /// CPU time of the whole machine (`/proc/stat`): busy (not idle or waiting for I/O), and
    /// stolen by the hypervisor; and the number of CPUs.
    machine_busy_secs: Option<f64>,
    machine_steal_secs: Option<f64>,
    machine_cpus: usize,
    /// Per target.
    targets: Vec<TargetReport>,
    /// Per `--server-pid`.
    servers: Vec<ServerReport>,
    /// `use_dpop_nonce` retries in the timed phase, over all targets.
    nonce_retries: u64,
    /// The ceiling measured before the warm-up and after the timed phase.
    ceiling_before: Option<ceiling::Costs>,
    ceiling_after: Option<ceiling::Costs>,
    /// The access token's and the assertion's `alg`.
    token_alg: Option<String>,
    assertion_alg: Option<String>,
    /// The server's resident set before the warm-up and after the timed phase, and its peak
    /// (`VmHWM`) after the timed phase, KiB; with several `--server-pid`s the sums.
    server_rss_before_kb: Option<u64>,
    server_rss_after_kb: Option<u64>,
    server_hwm_kb: Option<u64>,
}

/// The timed phase at one target.
#[derive(serde::Serialize)]
struct TargetReport {
    /// The target's issuer (the assertion's `aud`).
    issuer: String,
    /// Where its requests went.
    url: String,
    /// Successful requests.
    tokens: usize,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    /// Requests answered `use_dpop_nonce` and retried with the target's latest nonce.
    use_dpop_nonce_retries: u64,
    /// How often the target's `DPoP-Nonce` changed during the run (with `--dpop`).
    nonce_changes: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// One `--server-pid` during the timed phase.
#[derive(serde::Serialize)]
struct ServerReport {
    pid: u32,
    cpu_s: f64,
    rss_before_kb: Option<u64>,
    rss_after_kb: Option<u64>,
    hwm_kb: Option<u64>,
}

/// The sum, if every value is known and there is at least one.
fn sum_all(values: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    let mut any = false;
    let mut sum = 0u64;
    for v in values {
        sum = sum.saturating_add(v?);
        any = true;
    }
    any.then_some(sum)
}

/// A `kB` field (e.g. `VmRSS`, `VmHWM`) of `/proc/PID/status`.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A reading of a process's CPU time, in clock ticks.
fn cpu_ticks(stat_path: &str) -> Result<u64> {
    let text = std::fs::read_to_string(stat_path)?;
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{stat_path}: unexpected format"))?;
    // After ')': field 3 (state) is index 0, so utime (field 14) is 11 and stime (15) is 12.
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || -> Result<u64> {
        fields
            .next()
            .ok_or_else(|| anyhow!("{stat_path}: too few fields"))?
            .parse::<u64>()
            .with_context(|| format!("{stat_path}: not a number"))
    };
    let utime = next()?;
    let stime = next()?;
    Ok(utime + stime)
}

/// CPU ticks of `pid` and of each of its child processes, by process id (those that can be read).
fn tree_ticks(pid: u32) -> BTreeMap<u32, u64> {
    let mut ticks = BTreeMap::new();
    if let Ok(t) = cpu_ticks(&format!("/proc/{pid}/stat")) {
        ticks.insert(pid, t);
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return ticks;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            if let Ok(t) = cpu_ticks(&format!("/proc/{child}/stat")) {
                ticks.insert(child, t);
            }
        }
    }
    ticks
}

/// The ticks the processes of `after` used since `before`: a process new in `after` counts from
/// zero; one that exited in between is not counted.
fn tree_delta(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, a)| a.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// The whole machine's CPU time so far, from `/proc/stat`, in clock ticks.
struct MachineTicks {
    /// user + nice + system + irq + softirq (guest time is part of user).
    busy: u64,
    /// Stolen by the hypervisor.
    steal: u64,
    /// The number of CPUs listed.
    cpus: usize,
}

fn machine_ticks() -> Option<MachineTicks> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = text.lines();
    let total = lines.next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = total
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let cpus = lines
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some(MachineTicks {
        busy: field(0) + field(1) + field(2) + field(5) + field(6),
        steal: field(7),
        cpus,
    })
}

/// Clock ticks per second for `/proc/*/stat`: `sysconf(_SC_CLK_TCK)`.
fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// Pins the calling thread, and so every thread it starts later, to `cpu`. Called when the
/// process has only its main thread (the signing threads have been joined).
fn pin_to_cpu(cpu: usize) -> Result<()> {
    ensure!(
        cpu < rustix::thread::CpuSet::MAX_CPU,
        "--pin-cpu {cpu}: no such CPU"
    );
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .with_context(|| format!("--pin-cpu {cpu}: cannot pin to that CPU"))
}

impl Run {
    async fn execute(
        &self,
        probes: Vec<Job>,
        warmup: Vec<Job>,
        timed: Vec<Job>,
        expires: u64,
    ) -> Result<Report> {
        let client = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(self.concurrency)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        let targets = &self.shared.targets;

        // One probe request per target first, alone: fail fast on a configuration error.
        let mut probe_token = None;
        for (index, (body, proof)) in probes {
            let url = &targets
                .get(index)
                .ok_or_else(|| anyhow!("no target {index}"))?
                .url;
            let mut probe_request = client
                .post(url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
            if let Some(proof) = proof {
                probe_request = probe_request.header("dpop", proof);
            }
            let response = probe_request
                .send()
                .await
                .with_context(|| format!("POST {url}"))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status != reqwest::StatusCode::OK || !text.contains("\"access_token\"") {
                bail!("POST {url}: the probe request was answered {status}: {text}");
            }
            if probe_token.is_none() {
                probe_token = Some(
                    serde_json::from_str::<TokenOk>(&text)
                        .map(|t| t.access_token)
                        .unwrap_or_default(),
                );
            }
        }
        let probe_token = probe_token.unwrap_or_default();
        let token_alg = segl_jose::UnverifiedJws::parse(&probe_token)
            .ok()
            .map(|j| j.alg().name().to_owned());

        // The ceiling, measured while the server is idle, and its inputs.
        let ceiling = match &self.ceiling {
            None => None,
            Some(spec) => {
                let token = ceiling::Token::from_jwt(&probe_token)?;
                let before = spec.measure(&token)?;
                Some((spec, token, before))
            }
        };
        let rss = |field: &str| -> Vec<Option<u64>> {
            self.server_pids
                .iter()
                .map(|&pid| status_kb(pid, field))
                .collect()
        };
        let rss_before = rss("VmRSS");

        let warmup_done = warmup.len();
        let warmup_deadline = Instant::now() + self.duration;
        let warm = phase(
            &client,
            &self.shared,
            warmup,
            self.concurrency,
            warmup_deadline,
        )
        .await;
        let warmup_done = warmup_done - warm.unsent;

        // The assertions must stay valid until the timed phase has surely ended.
        let worst_end =
            unix_now()? + self.duration.as_secs() + 1 + REQUEST_TIMEOUT.as_secs() + EXPIRY_MARGIN;
        ensure!(
            worst_end <= expires,
            "pre-signing and warm-up took too long: the assertions would expire during the run; lower --requests, --warmup or --duration"
        );

        let server_ticks = || -> Result<Vec<u64>> {
            self.server_pids
                .iter()
                .map(|pid| cpu_ticks(&format!("/proc/{pid}/stat")))
                .collect()
        };
        let server_before = server_ticks()?;
        let db_before = self.db_pid.map(tree_ticks);
        let machine_before = machine_ticks();
        let client_before = cpu_ticks("/proc/self/stat").ok();
        let started = Instant::now();
        let outcome = phase(
            &client,
            &self.shared,
            timed,
            self.concurrency,
            started + self.duration,
        )
        .await;
        let elapsed = started.elapsed();
        let server_after = server_ticks()?;
        let db_after = self.db_pid.map(tree_ticks);
        let machine_after = machine_ticks();
        let client_after = cpu_ticks("/proc/self/stat").ok();
        let rss_after = rss("VmRSS");
        let hwm = rss("VmHWM");
        let (ceiling_before, ceiling_after) = match ceiling {
            None => (None, None),
            Some((spec, token, before)) => (Some(before), Some(spec.measure(&token)?)),
        };

        let tck = self.clk_tck as f64;
        let cpu = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / tck),
            _ => None,
        };
        let servers: Vec<ServerReport> = self
            .server_pids
            .iter()
            .enumerate()
            .map(|(i, &pid)| ServerReport {
                pid,
                cpu_s: cpu(server_before.get(i).copied(), server_after.get(i).copied())
                    .unwrap_or(0.0),
                rss_before_kb: rss_before.get(i).copied().flatten(),
                rss_after_kb: rss_after.get(i).copied().flatten(),
                hwm_kb: hwm.get(i).copied().flatten(),
            })
            .collect();
        let server_cpu_secs =
            (!servers.is_empty()).then(|| servers.iter().map(|s| s.cpu_s).sum::<f64>());
        let target_reports: Vec<TargetReport> = targets
            .iter()
            .zip(&outcome.targets)
            .map(|(target, out)| {
                let mut latencies = out.latencies_us.clone();
                latencies.sort_unstable();
                TargetReport {
                    issuer: target.issuer.clone(),
                    url: target.url.to_string(),
                    tokens: latencies.len(),
                    errors: out.errors.values().sum(),
                    errors_by_kind: out.errors.clone(),
                    use_dpop_nonce_retries: out.nonce_retries,
                    nonce_changes: target.nonce_changes(),
                    p50_ms: percentile_ms(&latencies, 0.50),
                    p99_ms: percentile_ms(&latencies, 0.99),
                }
            })
            .collect();
        let mut latencies: Vec<u64> = outcome
            .targets
            .iter()
            .flat_map(|t| t.latencies_us.iter().copied())
            .collect();
        latencies.sort_unstable();
        let pct = |p: f64| percentile_ms(&latencies, p);
        Ok(Report {
            warmup_done,
            warmup_errors: warm.error_count(),
            elapsed_secs: elapsed.as_secs_f64(),
            stopped_by: if outcome.unsent > 0 {
                "time limit"
            } else {
                "request count"
            },
            ok: latencies.len(),
            errors: outcome.all_errors(),
            nonce_retries: outcome.targets.iter().map(|t| t.nonce_retries).sum(),
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            max_ms: latencies.last().map_or(0.0, |&us| us as f64 / 1000.0),
            server_cpu_secs,
            client_cpu_secs: cpu(client_before, client_after),
            db_cpu_secs: match (&db_before, &db_after) {
                (Some(b), Some(a)) => Some(tree_delta(b, a) as f64 / tck),
                _ => None,
            },
            machine_busy_secs: cpu(
                machine_before.as_ref().map(|m| m.busy),
                machine_after.as_ref().map(|m| m.busy),
            ),
            machine_steal_secs: cpu(
                machine_before.as_ref().map(|m| m.steal),
                machine_after.as_ref().map(|m| m.steal),
            ),
            machine_cpus: machine_after.as_ref().map_or(0, |m| m.cpus),
            targets: target_reports,
            ceiling_before,
            ceiling_after,
            token_alg,
            assertion_alg: self
                .ceiling
                .as_ref()
                .map(|c| c.inputs.assertion_key.alg().name().to_owned()),
            server_rss_before_kb: sum_all(rss_before),
            server_rss_after_kb: sum_all(rss_after),
            server_hwm_kb: sum_all(hwm),
            servers,
            ..Report::default()
        })
    }
}

/// Nearest-rank percentile of sorted microsecond latencies, in milliseconds (0 if none).
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    let n = sorted_us.len();
    if n == 0 {
        return 0.0;
    }
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
    sorted_us
        .get(rank - 1)
        .map_or(0.0, |&us| us as f64 / 1000.0)
}

/// Sends `jobs` with `concurrency` closed-loop tasks until they are used up or `deadline`
/// has passed (requests in flight then finish, bounded by the request timeout).
async fn phase(
    client: &reqwest::Client,
    shared: &Arc<Shared>,
    jobs: Vec<Job>,
    concurrency: usize,
    deadline: Instant,
) -> Outcome {
    let queue = Arc::new(Mutex::new(jobs.into_iter()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        tasks.spawn(worker(
            client.clone(),
            Arc::clone(shared),
            Arc::clone(&queue),
            deadline,
        ));
    }
    let mut total = Outcome::new(shared.targets.len());
    let hard_stop = deadline + REQUEST_TIMEOUT + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(Ok(outcome))) => total.merge(outcome),
            Ok(Some(Err(_))) => *total.errors.entry("task failed".into()).or_default() += 1,
            Ok(None) => break,
            Err(_) => {
                let stuck = tasks.len() as u64;
                tasks.abort_all();
                *total.errors.entry("aborted".into()).or_default() += stuck;
                break;
            }
        }
    }
    total.unsent = queue.lock().map_or(0, |q| q.len());
    total
}

/// One closed-loop task. It takes the next job from the shared queue, whichever target it is
/// for, so the targets get the requests in turn.
async fn worker(
    client: reqwest::Client,
    shared: Arc<Shared>,
    queue: Arc<Mutex<std::vec::IntoIter<Job>>>,
    deadline: Instant,
) -> Outcome {
    let mut out = Outcome::new(shared.targets.len());
    let dpop = shared.creds.dpop_key.is_some();
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let Some((index, prepared)) = queue.lock().ok().and_then(|mut q| q.next()) else {
            break;
        };
        let (Some(target), Some(slot)) = (shared.targets.get(index), out.targets.get_mut(index))
        else {
            *out.errors.entry("no such target".into()).or_default() += 1;
            continue;
        };
        let sent = Instant::now();
        let mut answer = request(&client, &target.url, prepared, dpop).await;
        if let Some(nonce) = &answer.nonce {
            target.follow(nonce);
        }
        if dpop && answer.use_dpop_nonce {
            // Once more, with the target's latest nonce: a fresh assertion too, as a server may
            // have recorded the first one's `jti`.
            slot.nonce_retries += 1;
            answer = match shared.creds.resign(target) {
                Ok(again) => request(&client, &target.url, again, dpop).await,
                Err(_) => Answer::failed("signing failed"),
            };
            if let Some(nonce) = &answer.nonce {
                target.follow(nonce);
            }
        }
        match answer.result {
            Ok(()) => {
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                slot.latencies_us.push(us);
            }
            Err(kind) => *slot.errors.entry(kind).or_default() += 1,
        }
    }
    out
}

/// The success body's one field this tool checks.
#[derive(serde::Deserialize)]
struct TokenOk {
    access_token: String,
}

/// An error body's `error`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
}

/// How one request went.
struct Answer {
    /// `Err` names the failure kind.
    result: Result<(), String>,
    /// The answer's `DPoP-Nonce` (read only with DPoP).
    nonce: Option<String>,
    /// The answer was an error `use_dpop_nonce`.
    use_dpop_nonce: bool,
}

impl Answer {
    fn failed(kind: &str) -> Answer {
        Answer {
            result: Err(kind.to_owned()),
            nonce: None,
            use_dpop_nonce: false,
        }
    }
}

/// One token request.
async fn request(
    client: &reqwest::Client,
    url: &reqwest::Url,
    prepared: Prepared,
    dpop: bool,
) -> Answer {
    let (body, proof) = prepared;
    let mut builder = client
        .post(url.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body);
    if let Some(proof) = proof {
        builder = builder.header("dpop", proof);
    }
    let Ok(response) = builder.send().await else {
        return Answer::failed("transport");
    };
    let status = response.status();
    let nonce = if dpop {
        response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    } else {
        None
    };
    let Ok(bytes) = response.bytes().await else {
        return Answer::failed("transport");
    };
    if status != reqwest::StatusCode::OK {
        let use_dpop_nonce =
            serde_json::from_slice::<ErrorBody>(&bytes).is_ok_and(|e| e.error == "use_dpop_nonce");
        return Answer {
            result: Err(status.as_u16().to_string()),
            nonce,
            use_dpop_nonce,
        };
    }
    let result = match serde_json::from_slice::<TokenOk>(&bytes) {
        Ok(t) if !t.access_token.is_empty() => Ok(()),
        _ => Err("no_access_token".into()),
    };
    Answer {
        result,
        nonce,
        use_dpop_nonce: false,
    }
}

impl Report {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn done(&self) -> u64 {
        self.ok as u64 + self.error_count()
    }

    fn tokens_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.ok as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    fn server_us_per_token(&self) -> Option<f64> {
        self.per_token_us(self.server_cpu_secs)
    }

    /// CPU seconds per token issued, in µs.
    fn per_token_us(&self, cpu_secs: Option<f64>) -> Option<f64> {
        cpu_secs
            .filter(|_| self.ok > 0)
            .map(|s| s * 1e6 / self.ok as f64)
    }

    /// The ceiling: per operation the lower of the medians measured before and after the load.
    fn ceiling(&self) -> Option<ceiling::Costs> {
        match (self.ceiling_before, self.ceiling_after) {
            (Some(b), Some(a)) => Some(b.min(&a)),
            (b, a) => b.or(a),
        }
    }

    /// Tokens per second of server CPU time, divided by the ceiling (tokens per core-second).
    fn ratio_cpu(&self) -> Option<f64> {
        let ceiling = self.ceiling()?.tokens_per_core_second();
        let us = self.server_us_per_token()?;
        (ceiling > 0.0 && us > 0.0).then(|| (1e6 / us) / ceiling)
    }

    /// Tokens per second of wall time, divided by the ceiling.
    fn ratio_wall(&self) -> Option<f64> {
        let ceiling = self.ceiling()?.tokens_per_core_second();
        (ceiling > 0.0).then(|| self.tokens_per_sec() / ceiling)
    }

    fn utilisation(&self, cpu: Option<f64>) -> Option<f64> {
        cpu.filter(|_| self.elapsed_secs > 0.0)
            .map(|c| c / self.elapsed_secs)
    }

    fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "none".into();
        }
        self.errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn human(&self, args: &Args, clk_tck: u64) -> String {
        let mut s = String::new();
        let mut line = |label: &str, value: String| {
            s.push_str(&format!("  {label:<16}{value}\n"));
        };
        if let [only] = self.targets.as_slice() {
            line(
                "target",
                format!(
                    "{}  client {}  concurrency {}",
                    only.url, args.client_id, args.concurrency
                ),
            );
        } else {
            line(
                "targets",
                format!(
                    "{}, round-robin per request  client {}  concurrency {}",
                    self.targets.len(),
                    args.client_id,
                    args.concurrency
                ),
            );
        }
        line(
            "pre-signed",
            format!(
                "{} assertions in {:.2} s ({} threads)",
                self.presigned, self.presign_secs, self.presign_threads
            ),
        );
        line(
            "warm-up",
            format!(
                "{} requests, {} errors",
                self.warmup_done, self.warmup_errors
            ),
        );
        line(
            "timed phase",
            format!("{:.2} s, stopped by {}", self.elapsed_secs, self.stopped_by),
        );
        line(
            "requests",
            format!(
                "{} ({} ok, {} errors)",
                self.done(),
                self.ok,
                self.error_count()
            ),
        );
        line("errors", self.errors_text());
        if args.dpop {
            line(
                "nonce retries",
                format!(
                    "{} requests answered use_dpop_nonce and sent again",
                    self.nonce_retries
                ),
            );
        }
        line(
            "throughput",
            format!("{:.1} tokens/s", self.tokens_per_sec()),
        );
        line(
            "latency",
            format!(
                "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
            ),
        );
        if self.targets.len() > 1 {
            for (i, t) in self.targets.iter().enumerate() {
                line(
                    &format!("target {}", i + 1),
                    format!(
                        "{}: {} tokens, {} errors, p50 {:.2} ms  p99 {:.2} ms{}",
                        t.url,
                        t.tokens,
                        t.errors,
                        t.p50_ms,
                        t.p99_ms,
                        if args.dpop {
                            format!(", {} nonce retries", t.use_dpop_nonce_retries)
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
        match self.server_cpu_secs {
            Some(cpu) => {
                let pids = self
                    .servers
                    .iter()
                    .map(|s| s.pid.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let each = if self.servers.len() > 1 {
                    format!(
                        "; per process {} s",
                        self.servers
                            .iter()
                            .map(|s| format!("{:.2}", s.cpu_s))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    )
                } else {
                    String::new()
                };
                line(
                    "server CPU",
                    format!(
                        "{:.2} s ({:.0}% of a core), {} µs/token  [pid {pids}{each}, {clk_tck} ticks/s]",
                        cpu,
                        self.utilisation(Some(cpu)).unwrap_or(0.0) * 100.0,
                        self.server_us_per_token()
                            .map_or("-".into(), |u| format!("{u:.0}")),
                    ),
                )
            }
            None => line("server CPU", "not measured (no --server-pid)".into()),
        }
        if let (Some(pid), Some(cpu)) = (args.db_pid, self.db_cpu_secs) {
            line(
                "database CPU",
                format!(
                    "{:.2} s ({:.0}% of a core), {} µs/token  [pid {pid} and its children]",
                    cpu,
                    self.utilisation(Some(cpu)).unwrap_or(0.0) * 100.0,
                    self.per_token_us(Some(cpu))
                        .map_or("-".into(), |u| format!("{u:.0}")),
                ),
            );
        }
        if let Some(busy) = self.machine_busy_secs {
            line(
                "machine CPU",
                format!(
                    "{:.2} of {} CPUs busy, {:.2} stolen",
                    self.utilisation(Some(busy)).unwrap_or(0.0),
                    self.machine_cpus,
                    self.utilisation(self.machine_steal_secs).unwrap_or(0.0),
                ),
            );
        }
        if let Some(cpu) = self.client_cpu_secs {
            line(
                "client CPU",
                format!(
                    "{:.2} s ({:.0}% of a core)",
                    cpu,
                    self.utilisation(Some(cpu)).unwrap_or(0.0) * 100.0
                ),
            );
        }
        if let (Some(rss), Some(hwm)) = (self.server_rss_before_kb, self.server_hwm_kb) {
            line(
                "server memory",
                format!(
                    "RSS {:.1} MiB before the warm-up, {:.1} MiB after; peak (VmHWM) {:.1} MiB{}",
                    rss as f64 / 1024.0,
                    self.server_rss_after_kb.unwrap_or(0) as f64 / 1024.0,
                    hwm as f64 / 1024.0,
                    if self.servers.len() > 1 {
                        format!(" (sums over {} processes)", self.servers.len())
                    } else {
                        String::new()
                    }
                ),
            );
        }
        if let Some(c) = self.ceiling() {
            let fmt = |c: &ceiling::Costs| {
                format!(
                    "assertion {} {:.1} µs + proof {:.1} µs + token {} sign {:.1} µs",
                    self.assertion_alg.as_deref().unwrap_or("?"),
                    c.assertion_verify_us,
                    c.proof_verify_us,
                    self.token_alg.as_deref().unwrap_or("?"),
                    c.token_sign_us
                )
            };
            if let Some(b) = &self.ceiling_before {
                line("ceiling before", fmt(b));
            }
            if let Some(a) = &self.ceiling_after {
                line("ceiling after", fmt(a));
            }
            line(
                "ceiling",
                format!(
                    "{:.1} µs/token = {:.0} tokens/s per core (medians of {} samples on CPU {}; DPoP check_proof {:.1} µs)",
                    c.per_token_us(),
                    c.tokens_per_core_second(),
                    c.samples,
                    args.ceiling_cpu.unwrap_or(0),
                    c.proof_check_us
                ),
            );
            line(
                "ratio",
                format!(
                    "{} of the ceiling per server CPU second; {} in tokens/s",
                    self.ratio_cpu()
                        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                    self.ratio_wall()
                        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                ),
            );
        }
        s
    }

    fn to_json(&self, args: &Args, clk_tck: u64) -> serde_json::Value {
        let mut value = self.to_json_common(args, clk_tck);
        if let Some(object) = value.as_object_mut() {
            object.insert("server_pids".into(), serde_json::json!(args.server_pid));
            object.insert("servers".into(), serde_json::json!(self.servers));
            object.insert("targets".into(), serde_json::json!(self.targets));
            object.insert(
                "use_dpop_nonce_retries".into(),
                serde_json::json!(self.nonce_retries),
            );
            object.insert("db_pid".into(), serde_json::json!(args.db_pid));
            object.insert("db_cpu_s".into(), serde_json::json!(self.db_cpu_secs));
            object.insert(
                "db_cpu_util".into(),
                serde_json::json!(self.utilisation(self.db_cpu_secs)),
            );
            object.insert(
                "db_cpu_us_per_token".into(),
                serde_json::json!(self.per_token_us(self.db_cpu_secs)),
            );
            object.insert(
                "machine_cpu_busy".into(),
                serde_json::json!(self.utilisation(self.machine_busy_secs)),
            );
            object.insert(
                "machine_cpu_steal".into(),
                serde_json::json!(self.utilisation(self.machine_steal_secs)),
            );
            object.insert("machine_cpus".into(), serde_json::json!(self.machine_cpus));
        }
        value
    }

    /// The fields for one target and one server process.
    fn to_json_common(&self, args: &Args, clk_tck: u64) -> serde_json::Value {
        serde_json::json!({
            "issuer": args.issuer.first(),
            "client_id": args.client_id,
            "concurrency": args.concurrency,
            "presigned": self.presigned,
            "presign_s": self.presign_secs,
            "warmup": self.warmup_done,
            "warmup_errors": self.warmup_errors,
            "elapsed_s": self.elapsed_secs,
            "stopped_by": self.stopped_by,
            "requests": self.done(),
            "ok": self.ok,
            "errors": self.error_count(),
            "errors_by_kind": self.errors,
            "tokens_per_s": self.tokens_per_sec(),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "server_pid": args.server_pid.first(),
            "pin_cpu": args.pin_cpu,
            "server_cpu_s": self.server_cpu_secs,
            "server_cpu_util": self.utilisation(self.server_cpu_secs),
            "server_cpu_us_per_token": self.server_us_per_token(),
            "client_cpu_s": self.client_cpu_secs,
            "client_cpu_util": self.utilisation(self.client_cpu_secs),
            "clk_tck": clk_tck,
            "token_alg": self.token_alg,
            "assertion_alg": self.assertion_alg,
            "dpop": args.dpop,
            "server_rss_before_kb": self.server_rss_before_kb,
            "server_rss_after_kb": self.server_rss_after_kb,
            "server_hwm_kb": self.server_hwm_kb,
            "ceiling_before": self.ceiling_before,
            "ceiling_after": self.ceiling_after,
            "ceiling_us_per_token": self.ceiling().map(|c| c.per_token_us()),
            "ceiling_tokens_per_core_s": self.ceiling().map(|c| c.tokens_per_core_second()),
            "ratio_cpu": self.ratio_cpu(),
            "ratio_wall": self.ratio_wall(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).unwrap()
    }

    #[test]
    fn loopback_only() {
        for ok in [
            "http://127.0.0.1:8080/connect/token",
            "http://127.1.2.3/connect/token",
            "http://[::1]:9000/connect/token",
            "https://localhost:8443/connect/token",
        ] {
            require_loopback(&url(ok)).unwrap();
        }
        for bad in [
            "http://10.0.0.1/connect/token",
            "http://example.com/connect/token",
            "http://[2001:db8::1]/connect/token",
            "http://0.0.0.0/connect/token",
            "http://localhost.example.com/connect/token",
            "ftp://127.0.0.1/connect/token",
        ] {
            assert!(require_loopback(&url(bad)).is_err(), "{bad}");
        }
    }

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["segl-load", "--client-id", "bench", "--key", "k.json"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn targets() {
        // One issuer: the old invocation, one target.
        let t = parse_targets(&args(&["--issuer", "http://127.0.0.1:8080/"])).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].issuer, "http://127.0.0.1:8080/");
        assert_eq!(t[0].url.as_str(), "http://127.0.0.1:8080/connect/token");
        assert_eq!(t[0].htu, "http://127.0.0.1:8080/connect/token");

        // Several issuers: several servers, each its own aud and htu.
        let t = parse_targets(&args(&[
            "--issuer",
            "http://127.0.0.1:1",
            "--issuer",
            "http://127.0.0.1:2",
        ]))
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].issuer, "http://127.0.0.1:2");
        assert_eq!(t[1].url.as_str(), "http://127.0.0.1:2/connect/token");
        assert_eq!(t[1].htu, "http://127.0.0.1:2/connect/token");

        // Processes sharing one issuer: requests go to each, aud and htu stay the issuer's.
        let t = parse_targets(&args(&[
            "--issuer",
            "http://127.0.0.1:1",
            "--target",
            "http://127.0.0.1:1",
            "--target",
            "http://127.0.0.1:2",
            "--target",
            "http://localhost:3",
        ]))
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[2].issuer, "http://127.0.0.1:1");
        assert_eq!(t[2].url.as_str(), "http://localhost:3/connect/token");
        assert_eq!(t[2].htu, "http://127.0.0.1:1/connect/token");

        // Every target is loopback-only; --target goes with one issuer.
        for bad in [
            &[
                "--issuer",
                "http://127.0.0.1:1",
                "--issuer",
                "http://10.0.0.1:2",
            ][..],
            &[
                "--issuer",
                "http://127.0.0.1:1",
                "--target",
                "http://example.com",
            ],
            &[
                "--issuer",
                "http://127.0.0.1:1",
                "--issuer",
                "http://127.0.0.1:2",
                "--target",
                "http://127.0.0.1:3",
            ],
        ] {
            assert!(parse_targets(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(Args::try_parse_from(["segl-load", "--client-id", "c", "--key", "k"]).is_err());
    }

    #[test]
    fn round_robin() {
        let part = |t: &str, n: usize| {
            (0..n)
                .map(|i| (format!("{t}{i}"), None))
                .collect::<Vec<Prepared>>()
                .into_iter()
        };
        let jobs = interleave(vec![part("a", 3), part("b", 3), part("c", 3)], 7);
        let order: Vec<(usize, &str)> = jobs.iter().map(|(t, (b, _))| (*t, b.as_str())).collect();
        assert_eq!(
            order,
            [
                (0, "a0"),
                (1, "b0"),
                (2, "c0"),
                (0, "a1"),
                (1, "b1"),
                (2, "c1"),
                (0, "a2")
            ]
        );
        assert_eq!(interleave(vec![part("a", 2)], 2).len(), 2);
    }

    #[test]
    fn outcomes_merge_per_target() {
        let mut total = Outcome::new(2);
        let mut one = Outcome::new(2);
        one.targets[0].latencies_us.push(5);
        one.targets[1].errors.insert("500".into(), 2);
        one.targets[1].nonce_retries = 1;
        let mut two = Outcome::new(2);
        two.targets[1].latencies_us.push(7);
        two.targets[1].errors.insert("500".into(), 1);
        two.errors.insert("aborted".into(), 1);
        total.merge(one);
        total.merge(two);
        assert_eq!(total.targets[0].latencies_us, [5]);
        assert_eq!(total.targets[1].latencies_us, [7]);
        assert_eq!(total.targets[1].errors["500"], 3);
        assert_eq!(total.targets[1].nonce_retries, 1);
        assert_eq!(total.error_count(), 4);
        assert_eq!(total.all_errors()["aborted"], 1);
        assert_eq!(sum_all([Some(1), Some(2)]), Some(3));
        assert_eq!(sum_all([Some(1), None]), None);
        assert_eq!(sum_all([]), None);
    }

    #[test]
    fn nonces_are_followed_per_target() {
        let issuer = reqwest::Url::parse("http://127.0.0.1:1/connect/token").unwrap();
        let t = Target::new("http://127.0.0.1:1", issuer.clone(), &issuer);
        t.set_initial_nonce(Some("n1".into()));
        t.follow("n1");
        assert_eq!(t.nonce_changes(), 0);
        t.follow("n2");
        assert_eq!(t.nonce().as_deref(), Some("n2"));
        assert_eq!(t.nonce_changes(), 1);
    }

    /// A stub token endpoint: the first request is answered `use_dpop_nonce` with nonce
    /// `n2`, the others 200 with a token. Returns its address and the DPoP headers it got.
    async fn stub_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let head = text[..end].to_ascii_lowercase();
                        let header = |name: &str| {
                            head.lines()
                                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                                .map(str::to_owned)
                        };
                        let length: usize = header("content-length").unwrap().parse().unwrap();
                        if buf.len() < end + 4 + length {
                            continue;
                        }
                        buf.drain(..end + 4 + length);
                        // The header as sent (the proof is case-sensitive).
                        let proof = text[..end]
                            .lines()
                            .find_map(|l| l.strip_prefix("dpop: "))
                            .unwrap_or_default()
                            .to_owned();
                        let first = {
                            let mut seen = log.lock().unwrap();
                            seen.push(proof);
                            seen.len() == 1
                        };
                        let (status, body) = if first {
                            ("400 Bad Request", r#"{"error":"use_dpop_nonce"}"#)
                        } else {
                            ("200 OK", r#"{"access_token":"t"}"#)
                        };
                        let response = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ndpop-nonce: n2\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        socket.write_all(response.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn use_dpop_nonce_is_retried_with_the_new_nonce() {
        let (addr, seen) = stub_server().await;
        let base = format!("http://{addr}");
        let url = endpoint(&base, "/connect/token", "--issuer").unwrap();
        let target = Target::new(&base, url.clone(), &url);
        target.set_initial_nonce(Some("n1".into()));
        let creds = Credentials {
            client_id: "bench".into(),
            scope: None,
            resource: None,
            kid: "k".into(),
            typ: "client-authentication+jwt".into(),
            key: segl_jose::SigningKey::generate(segl_jose::Alg::ES256).unwrap(),
            dpop_key: Some(segl_jose::SigningKey::generate(segl_jose::Alg::ES256).unwrap()),
        };
        let jobs: Vec<Job> = (0..3)
            .map(|_| {
                let p = creds
                    .template(&target, Some("n1"), unix_now().unwrap())
                    .prepared(&creds.key)
                    .unwrap();
                (0, p)
            })
            .collect();
        let shared = Arc::new(Shared {
            targets: vec![target],
            creds,
        });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let out = phase(&client, &shared, jobs, 1, deadline).await;
        assert_eq!(out.error_count(), 0, "{:?}", out.all_errors());
        assert_eq!(out.targets[0].latencies_us.len(), 3);
        assert_eq!(out.targets[0].nonce_retries, 1);
        assert_eq!(shared.targets[0].nonce().as_deref(), Some("n2"));
        assert_eq!(shared.targets[0].nonce_changes(), 1);
        // The retry carried the new nonce and a new proof; the later requests are pre-signed.
        let nonces: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|p| {
                let jws = segl_jose::UnverifiedJws::parse(p).unwrap();
                jws.unverified_claims()["nonce"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(nonces, ["n1", "n2", "n1", "n1"]);
    }

    #[test]
    fn process_trees_and_the_machine() {
        // This test process and its children (none, or the test harness's).
        let me = std::process::id();
        let before = tree_ticks(me);
        assert!(before.contains_key(&me));
        let mut after = before.clone();
        *after.get_mut(&me).unwrap() += 5;
        after.insert(u32::MAX, 3);
        assert_eq!(tree_delta(&before, &after), 8);
        let m = machine_ticks().unwrap();
        assert!(m.cpus >= 1);
        assert!(m.busy > 0);
    }

    #[test]
    fn clock_ticks() {
        assert!(clock_ticks_per_second() >= 1);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.50), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&v, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
        assert_eq!(percentile_ms(&[7000], 0.01), 7.0);
    }

    #[test]
    fn stat_parsing() {
        let dir = std::env::temp_dir().join(format!("segl-load-test-{}", std::process::id()));
        std::fs::write(
            &dir,
            "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3\n",
        )
        .unwrap();
        assert_eq!(cpu_ticks(dir.to_str().unwrap()).unwrap(), 325);
        std::fs::remove_file(&dir).unwrap();
        assert!(cpu_ticks("/proc/self/stat").is_ok());
    }

    #[test]
    fn body_is_a_signed_form() {
        let key = segl_jose::SigningKey::generate(segl_jose::Alg::ES256).unwrap();
        let t = BodyTemplate {
            client_id: "bench",
            aud: "http://127.0.0.1:1",
            scope: Some("bench:api/read"),
            resource: None,
            kid: key.kid(),
            typ: segl_proto::typ::CLIENT_AUTHENTICATION,
            iat: 1000,
            dpop: None,
        };
        let (bodies, _) = presign(&key, &t, 5).unwrap();
        assert_eq!(bodies.len(), 5);
        let mut jtis = std::collections::HashSet::new();
        for (b, proof) in &bodies {
            assert!(proof.is_none());
            let form: BTreeMap<String, String> =
                form_urlencoded::parse(b.as_bytes()).into_owned().collect();
            assert_eq!(form["grant_type"], "client_credentials");
            assert_eq!(form["scope"], "bench:api/read");
            let jws = segl_jose::UnverifiedJws::parse(&form["client_assertion"]).unwrap();
            assert_eq!(
                jws.unverified_header_str("typ"),
                Some("client-authentication+jwt")
            );
            let c = jws.unverified_claims();
            assert_eq!(c["exp"], 1060);
            assert_eq!(c["aud"], "http://127.0.0.1:1");
            jtis.insert(c["jti"].as_str().unwrap().to_owned());
        }
        assert_eq!(jtis.len(), 5);
        // With --dpop every request has its own proof, with the nonce.
        let dpop_key = segl_jose::SigningKey::generate(segl_jose::Alg::ES256).unwrap();
        let t = BodyTemplate {
            dpop: Some((&dpop_key, "http://127.0.0.1:1/connect/token", Some("n1"))),
            ..t
        };
        let (bodies, _) = presign(&key, &t, 3).unwrap();
        let proofs: std::collections::HashSet<String> =
            bodies.into_iter().map(|(_, p)| p.unwrap()).collect();
        assert_eq!(proofs.len(), 3);
        for p in &proofs {
            let jws = segl_jose::UnverifiedJws::parse(p).unwrap();
            assert_eq!(jws.unverified_header_str("typ"), Some("dpop+jwt"));
            assert_eq!(jws.unverified_claims()["nonce"], "n1");
        }
    }
}
