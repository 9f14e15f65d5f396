//! `segl audit verify` and `segl audit query`: the durable audit log read back from the store.
//!
//! `verify` walks the whole chain in pages with segl-core's verifier, after checking every
//! stored checkpoint's signature, and compares the chain head; `query` selects events by
//! person, client, organization and time. Times are RFC 3339 or unix seconds, parsed here
//! without a date library (the proleptic Gregorian calendar, UTC offsets honoured).

use crate::{ConfigArgs, settings};
use anyhow::{Context as _, Result, anyhow};
use segl_core::audit::{Checkpoint, Event, Verifier, hex};
use segl_jose::{Alg, Jwk, VerifyingKey};
use segl_store::{AuditCheckpoint, AuditQuery, AuditRecord, Store};
use std::collections::HashMap;

/// Events read per round trip.
const PAGE: u32 = 1000;

/// How `query` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per event, aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// `segl audit query` arguments.
#[derive(clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only events about this person (national identity number).
    #[arg(long)]
    pid: Option<String>,
    /// Only events of this client_id.
    #[arg(long)]
    client: Option<String>,
    /// Only events naming this organization number (parent, child or supplier).
    #[arg(long)]
    org: Option<String>,
    /// From this time on (inclusive): RFC 3339 (2025-01-31T12:00:00Z) or unix seconds.
    #[arg(long)]
    from: Option<String>,
    /// Up to this time (inclusive): RFC 3339 or unix seconds.
    #[arg(long)]
    to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// At most this many events (the first ones, in sequence order).
    #[arg(long)]
    limit: Option<u64>,
}

/// `segl audit verify`: exits non-zero naming the first problem, or prints
/// `ok: N events, last seq S, head <hash>`.
pub async fn verify(args: ConfigArgs) -> Result<()> {
    let settings = settings(&args, false)?;
    let store = segl_server::app::open_store(&settings.database).await?;
    let (checkpoints, kept_keys) = signed_checkpoints(store.as_ref()).await?;
    let mut verifier = Verifier::new(&checkpoints);
    let mut from = 1;
    loop {
        let page = store.audit_events(from, PAGE).await?;
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        for record in page {
            verifier
                .push(&segl_server::audit::recorded(record))
                .map_err(|p| anyhow!("audit log verification failed: {p}"))?;
        }
        from = last
            .checked_add(1)
            .ok_or_else(|| anyhow!("audit log verification failed: seq overflow"))?;
    }
    let head = store.audit_head().await?;
    let summary = verifier
        .finish(Some((head.seq, &head.hash)))
        .map_err(|p| anyhow!("audit log verification failed: {p}"))?;
    println!(
        "ok: {} events, last seq {}, head {}",
        summary.events,
        summary.last_seq,
        hex(&summary.head)
    );
    let latest = checkpoints.iter().map(|c| c.seq).max();
    match latest {
        Some(seq) => println!(
            "checkpoints: {} signed, all agree with the chain (latest at seq {seq}){}",
            summary.checkpoints,
            if kept_keys > 0 {
                format!(
                    "; {kept_keys} verified with the public key stored beside them (their key is no longer in signing_keys)"
                )
            } else {
                String::new()
            }
        ),
        None => println!("checkpoints: none yet"),
    }
    Ok(())
}

/// Every stored checkpoint, its signature checked: with the signing key of its `kid` from the
/// store, or, for a key retired and deleted since, with the public JWK stored beside it when
/// that key's RFC 7638 thumbprint is the `kid` (Segl's kids are thumbprints). Also returns how
/// many needed the latter. Fails naming the first checkpoint that does not verify.
async fn signed_checkpoints(store: &dyn Store) -> Result<(Vec<Checkpoint>, usize)> {
    let mut keys: HashMap<String, VerifyingKey> = HashMap::new();
    for stored in store.signing_keys().await? {
        if let Ok(key) = verifying_key(&stored.public_jwk, &stored.alg) {
            keys.insert(stored.kid, key);
        }
    }
    let mut out = Vec::new();
    let mut kept = 0;
    for row in store.audit_checkpoints().await? {
        let fail = |why: String| {
            anyhow!(
                "audit log verification failed: checkpoint at seq {}: {why}",
                row.seq
            )
        };
        let kept_here;
        let key = match keys.get(&row.kid) {
            Some(key) => key,
            None => {
                kept += 1;
                kept_here = kept_key(&row).map_err(fail)?;
                &kept_here
            }
        };
        let checkpoint = Checkpoint::verify(&row.jws, std::slice::from_ref(key)).map_err(fail)?;
        if checkpoint.seq != row.seq {
            return Err(fail(format!(
                "the signed checkpoint is for seq {}",
                checkpoint.seq
            )));
        }
        out.push(checkpoint);
    }
    Ok((out, kept))
}

/// The public key stored with a checkpoint, accepted only when its thumbprint is the kid.
fn kept_key(row: &AuditCheckpoint) -> Result<VerifyingKey, String> {
    let jwk = Jwk::from_json(row.public_jwk.as_bytes())
        .map_err(|e| format!("its stored public key: {e}"))?;
    if jwk.thumbprint().ok().as_deref() != Some(row.kid.as_str()) {
        return Err(format!(
            "its stored public key is not the key {} (thumbprint differs)",
            row.kid
        ));
    }
    let alg = segl_jose::UnverifiedJws::parse(&row.jws)
        .map_err(|e| format!("not a JWS: {e}"))?
        .alg();
    VerifyingKey::from_jwk(&jwk, alg).map_err(|e| format!("its stored public key: {e}"))
}

/// A signing key's public JWK (stored JSON) as a verifier.
fn verifying_key(public_jwk: &str, alg: &str) -> Result<VerifyingKey> {
    let jwk = Jwk::from_json(public_jwk.as_bytes())?;
    let alg: Alg = alg.parse().map_err(|_| anyhow!("unknown alg {alg}"))?;
    Ok(VerifyingKey::from_jwk(&jwk, alg)?)
}

/// `segl audit query`.
pub async fn query(args: QueryArgs) -> Result<()> {
    let from = args
        .from
        .as_deref()
        .map(parse_time)
        .transpose()
        .context("--from")?;
    let to = args
        .to
        .as_deref()
        .map(parse_time)
        .transpose()
        .context("--to")?;
    let settings = settings(&args.config, false)?;
    let store = segl_server::app::open_store(&settings.database).await?;
    let mut query = AuditQuery {
        pid: args.pid,
        client_id: args.client,
        org: args.org,
        from,
        to,
        after_seq: 0,
        limit: PAGE,
    };
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut out = Output::new();
    if args.format == Format::Table {
        out.line(&table_header())?;
    }
    while left > 0 && out.open {
        query.limit = u32::try_from(left.min(u64::from(PAGE))).unwrap_or(PAGE);
        let page = store.query_audit(&query).await?;
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        for record in page {
            left = left.saturating_sub(1);
            out.line(&match args.format {
                Format::Table => table_row(&record),
                Format::Json => json_line(record)?,
            })?;
        }
        query.after_seq = last;
    }
    Ok(())
}

/// Standard output for a listing that may be piped into `head`: a closed pipe ends the
/// listing quietly instead of failing (or panicking, as `println!` does).
struct Output {
    stdout: std::io::StdoutLock<'static>,
    /// Whether the reader is still there.
    open: bool,
}

impl Output {
    fn new() -> Output {
        Output {
            stdout: std::io::stdout().lock(),
            open: true,
        }
    }

    fn line(&mut self, text: &str) -> Result<()> {
        use std::io::Write as _;
        if !self.open {
            return Ok(());
        }
        match writeln!(self.stdout, "{text}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.open = false;
                Ok(())
            }
            other => Ok(other?),
        }
    }
}

fn table_header() -> String {
    format!(
        "{:>6}  {:<20}  {:<28}  {:<22}  {:<16}  {:<9}  {:<11}  {:<22}  {:<32}  detail",
        "seq", "time (UTC)", "event", "outcome", "client", "org", "pid", "audience", "jti"
    )
}

fn table_row(r: &AuditRecord) -> String {
    let e = &r.event;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let outcome = match &e.error {
        Some(error) => format!("{} ({error})", e.outcome),
        None => e.outcome.clone(),
    };
    let mut detail = e.detail.clone().unwrap_or_default();
    if !e.actor_chain.is_empty() {
        detail = format!("actors={} {detail}", e.actor_chain.join(","));
    }
    format!(
        "{:>6}  {:<20}  {:<28}  {:<22}  {:<16}  {:<9}  {:<11}  {:<22}  {:<32}  {}",
        r.seq,
        format_time(e.time),
        e.event,
        outcome,
        or_dash(&e.client_id),
        or_dash(&e.orgnr_parent),
        or_dash(&e.pid),
        or_dash(&e.audience),
        or_dash(&e.jti),
        detail.trim_end()
    )
}

/// The event as one JSON object: its fields, `seq`, `time_utc` and the chain `hash` (hex).
fn json_line(r: AuditRecord) -> Result<String> {
    let hash = hex(&r.hash);
    let event: Event = segl_server::audit::from_store(r.event);
    let mut value = serde_json::to_value(&event)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("seq".into(), r.seq.into());
        object.insert("time_utc".into(), format_time(event.time).into());
        object.insert("hash".into(), hash.into());
    }
    Ok(serde_json::to_string(&value)?)
}

/// Unix seconds, or RFC 3339 (`2025-01-31T12:00:00Z`, `…+01:00`, fractions ignored; `T` or a
/// space; a date alone is midnight UTC).
pub fn parse_time(text: &str) -> Result<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let bad = || anyhow!("{text:?} is neither unix seconds nor an RFC 3339 time");
    let number = |s: Option<&str>| -> Result<i64> {
        s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(i) => (text.get(..i), text.get(i + 1..)),
        None => (Some(text), None),
    };
    let mut d = date.ok_or_else(bad)?.split('-');
    let (year, month, day) = (number(d.next())?, number(d.next())?, number(d.next())?);
    if d.next().is_some()
        || !(0..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in(year, month)
    {
        return Err(bad());
    }
    let mut secs = days_from_civil(year, month, day) * 86_400;
    if let Some(rest) = rest {
        let zone_at = rest.find(['Z', 'z', '+', '-']).ok_or_else(bad)?;
        let (clock, zone) = rest.split_at(zone_at);
        let clock = clock.split('.').next().ok_or_else(bad)?;
        let mut c = clock.split(':');
        let (h, m, s) = (number(c.next())?, number(c.next())?, number(c.next())?);
        if c.next().is_some() || h > 23 || m > 59 || s > 60 {
            return Err(bad());
        }
        secs += h * 3600 + m * 60 + s;
        let offset = match zone {
            "Z" | "z" => 0,
            _ => {
                let sign = if zone.starts_with('-') { -1 } else { 1 };
                let mut z = zone.get(1..).ok_or_else(bad)?.split(':');
                let (zh, zm) = (number(z.next())?, number(z.next())?);
                if z.next().is_some() || zh > 23 || zm > 59 {
                    return Err(bad());
                }
                sign * (zh * 3600 + zm * 60)
            }
        };
        secs -= offset;
    }
    Ok(secs)
}

/// Unix seconds as RFC 3339 UTC, e.g. `2025-01-31T12:00:00Z`.
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000);
        assert_eq!(
            parse_time("2023-11-14T23:13:20+01:00").unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_time("2023-11-14 21:13:20.999-01:00").unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_time("2024-02-29").unwrap(), 1_709_164_800);
        assert_eq!(parse_time("1969-12-31T23:59:59Z").unwrap(), -1);
        for bad in [
            "",
            "yesterday",
            "2023-13-01",
            "2023-02-29",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14-01",
            "+2023-11-14",
            "99999999999999999999-01-01",
            "123456789012-01-01",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_format_as_rfc3339_utc_and_round_trip() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59Z");
        for t in [0, 1, 951_782_400, 1_709_164_800, 4_102_444_800, -86_401] {
            assert_eq!(parse_time(&format_time(t)).unwrap(), t, "{t}");
        }
    }
}
