//! Lab stand-in for what OpenTenBase adds to PostgreSQL's SQL, never shipped: a proxy in front of
//! a real PostgreSQL server that speaks the wire protocol byte for byte (startup, SCRAM
//! authentication, queries, COPY and streaming replication all pass through untouched) and only
//! rewrites the statements PostgreSQL does not have:
//!
//! - `ALTER [CLUSTER] [GTM] NODE name WITH (host='…', port=…)` →
//!   `SELECT opsh_lab.alter_node('name', 'options')`
//!
//! It follows OpenTenBase's `src/backend/parser/gram.y` (AlterNodeStmt) and
//! `src/backend/pgxc/nodemgr/nodemgr.c` (PgxcNodeAlter, check_node_options), as of OpenTenBase
//! master / v5: the node is looked up by name whatever its type, so `ALTER NODE` and `ALTER GTM
//! NODE` do the same; an unquoted name is folded to lower case; the errors are the real ones
//! (`PGXC Node %s: object not defined`, `incorrect option: %s`, `No options specified`, `port value
//! is out of range` (22003), a quoted port is `invalid argument for port`, a GTM row needs both
//! host and port, `CLUSTER could not be modified.`); on a standby the catalog update needs a
//! transaction id and fails with `cannot assign TransactionIds during recovery`.
//! `pgxc_pool_reload()` records the reload and, as `src/backend/pgxc/pool/poolutils.c` does,
//! refuses to run inside a transaction block — the proxy follows the server's transaction status
//! (ReadyForQuery) to know. `pgxc_node` has v5's columns (`src/include/catalog/pgxc_node.h`).
//!
//! TLS: the proxy answers SSLRequest with `N` (no TLS), so lab OpenTenBase nodes use sslmode
//! `prefer`/`disable`; authentication is still a real SCRAM exchange with the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context, Result};

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Serve forever: one thread pair per connection.
pub fn serve(listen: &str, backend: &Path) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let backend = backend.to_path_buf();
        std::thread::spawn(move || {
            let _ = handle(client, &backend);
        });
    }
    Ok(())
}

fn handle(mut client: TcpStream, backend: &PathBuf) -> Result<()> {
    client.set_nodelay(true)?;
    // Startup: answer SSL / GSS encryption requests with "no", then forward the real startup.
    let startup = loop {
        let length = read_u32(&mut client)? as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        client.read_exact(&mut body)?;
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            client.write_all(b"N")?;
            continue;
        }
        let mut packet = (length as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        break packet;
    };
    // A server that is down refuses the connection, as the real node's port would.
    let mut server = UnixStream::connect(backend)?;
    server.write_all(&startup)?;
    let mut from_server = server.try_clone()?;
    let mut to_client = client.try_clone()?;
    let status = std::sync::Arc::new(AtomicU8::new(b'I'));
    let seen = status.clone();
    let downstream = std::thread::spawn(move || {
        let _ = relay_server(&mut from_server, &mut to_client, &seen);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let upstream = relay_client(&mut client, &mut server, &status);
    let _ = server.shutdown(Shutdown::Both);
    let _ = downstream.join();
    upstream
}

/// Server → client, message by message, noting the transaction status of every ReadyForQuery
/// (`I` idle, `T` in a transaction block, `E` in a failed one).
fn relay_server(server: &mut UnixStream, client: &mut TcpStream, status: &AtomicU8) -> Result<()> {
    loop {
        let mut kind = [0u8; 1];
        if server.read_exact(&mut kind).is_err() {
            return Ok(());
        }
        let length = read_u32(server)? as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        server.read_exact(&mut body)?;
        if kind[0] == b'Z'
            && let Some(s) = body.first()
        {
            status.store(*s, Ordering::SeqCst);
        }
        let mut message = Vec::with_capacity(body.len() + 5);
        message.push(kind[0]);
        message.extend_from_slice(&(length as u32).to_be_bytes());
        message.extend_from_slice(&body);
        client.write_all(&message)?;
    }
}

/// Client → server: typed messages; `Q` (simple query) and `P` (parse) have their SQL rewritten.
fn relay_client(client: &mut TcpStream, server: &mut UnixStream, status: &AtomicU8) -> Result<()> {
    loop {
        let mut kind = [0u8; 1];
        if client.read_exact(&mut kind).is_err() {
            return Ok(());
        }
        let length = read_u32(client)? as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        client.read_exact(&mut body)?;
        let in_block = status.load(Ordering::SeqCst) != b'I';
        let body = match kind[0] {
            b'Q' => rewrite_query_message(&body, in_block),
            b'P' => rewrite_parse_message(&body, in_block),
            _ => body,
        };
        let mut message = Vec::with_capacity(body.len() + 5);
        message.push(kind[0]);
        message.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        message.extend_from_slice(&body);
        server.write_all(&message)?;
    }
}

fn read_u32(stream: &mut impl Read) -> Result<u32> {
    let mut bytes = [0u8; 4];
    stream.read_exact(&mut bytes)?;
    Ok(u32::from_be_bytes(bytes))
}

fn rewrite_query_message(body: &[u8], in_block: bool) -> Vec<u8> {
    let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).to_string();
    // Several statements in one simple query run as one (implicit) transaction block.
    let block = in_block || sql.trim().trim_end_matches(';').contains(';');
    match rewrite(&sql, block) {
        Some(new) => [new.as_bytes(), &[0]].concat(),
        None => body.to_vec(),
    }
}

fn rewrite_parse_message(body: &[u8], in_block: bool) -> Vec<u8> {
    // name \0 query \0 rest
    let Some(name_end) = body.iter().position(|b| *b == 0) else { return body.to_vec() };
    let Some(query_len) = body[name_end + 1..].iter().position(|b| *b == 0) else { return body.to_vec() };
    let query_end = name_end + 1 + query_len;
    let sql = String::from_utf8_lossy(&body[name_end + 1..query_end]).to_string();
    match rewrite(&sql, in_block) {
        Some(new) => [&body[..=name_end], new.as_bytes(), &body[query_end..]].concat(),
        None => body.to_vec(),
    }
}

/// `ALTER [CLUSTER] [GTM] NODE name WITH (options)` → a call of the lab's validating function;
/// `pgxc_pool_reload()` inside a transaction block → its refusal.
pub fn rewrite(sql: &str, in_block: bool) -> Option<String> {
    if in_block && sql.to_ascii_lowercase().contains("pgxc_pool_reload") {
        return Some("SELECT opsh_lab.pool_reload_in_block()".into());
    }
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let upper = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
    if upper(0).as_deref() != Some("ALTER") {
        return None;
    }
    let mut at = 1;
    if upper(at).as_deref() == Some("CLUSTER") {
        at += 1;
    }
    if upper(at).as_deref() == Some("GTM") {
        at += 1;
    }
    if upper(at).as_deref() != Some("NODE") {
        return None;
    }
    let name_at = at + 1;
    let raw = words.get(name_at)?;
    // A ColId: unquoted names fold to lower case.
    let name = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => raw.to_lowercase(),
    };
    let rest = trimmed.splitn(name_at + 2, char::is_whitespace).nth(name_at + 1).unwrap_or("").trim();
    if rest.is_empty() {
        return Some(format!("SELECT opsh_lab.alter_node({}, NULL)", literal(&name)));
    }
    let options = match rest.get(..4) {
        Some(w) if w.eq_ignore_ascii_case("with") => rest[4..].trim(),
        _ => return None,
    };
    let options = options.strip_prefix('(')?.strip_suffix(')')?;
    Some(format!("SELECT opsh_lab.alter_node({}, {})", literal(&name), literal(options)))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The catalog and functions the proxy's rewrites call; installed in the `postgres` database of
/// every coordinator and datanode primary (standbys get them by replication).
pub const CATALOG_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS opsh_lab;
CREATE TABLE IF NOT EXISTS public.pgxc_node (
    node_name name PRIMARY KEY,
    node_type "char" NOT NULL,
    node_port integer NOT NULL,
    node_forward_port integer NOT NULL DEFAULT 0,
    node_host name NOT NULL,
    nodeis_primary boolean NOT NULL DEFAULT false,
    nodeis_preferred boolean NOT NULL DEFAULT false,
    node_id integer NOT NULL,
    node_plane_name name NOT NULL DEFAULT 'local',
    node_plane_id integer NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS opsh_lab.pool_reloads (at timestamptz NOT NULL DEFAULT clock_timestamp());

-- check_node_options (nodemgr.c): reloption syntax, the real keys and messages.
CREATE OR REPLACE FUNCTION opsh_lab.node_options(options text, OUT host text, OUT port integer) LANGUAGE plpgsql AS $$
DECLARE
    item text;
    key text;
    value text;
BEGIN
    IF options IS NULL OR trim(options) = '' THEN
        RAISE EXCEPTION 'No options specified' USING ERRCODE = '42601';
    END IF;
    FOREACH item IN ARRAY regexp_split_to_array(options, '\s*,\s*') LOOP
        IF strpos(item, '=') = 0 THEN
            RAISE EXCEPTION 'syntax error at or near "%"', item USING ERRCODE = '42601';
        END IF;
        key := lower(trim(split_part(item, '=', 1)));
        value := trim(substr(item, strpos(item, '=') + 1));
        IF key = 'host' THEN
            host := trim(both '''' from value);
        ELSIF key = 'port' THEN
            -- defGetTypeLength: a quoted value is a string, not a number.
            IF value ~ '^''.*''$' THEN
                RAISE EXCEPTION 'invalid argument for port: "%"', trim(both '''' from value) USING ERRCODE = '42601';
            ELSIF value !~ '^-?[0-9]+$' THEN
                RAISE EXCEPTION 'port requires an integer value' USING ERRCODE = '42601';
            ELSIF value::bigint < 1 OR value::bigint > 65535 THEN
                RAISE EXCEPTION 'port value is out of range' USING ERRCODE = '22003';
            END IF;
            port := value::integer;
        ELSIF key = 'cluster' THEN
            RAISE EXCEPTION 'CLUSTER could not be modified.' USING ERRCODE = 'XX000';
        ELSIF key IN ('type', 'primary', 'preferred', 'group', 'alter', 'forward') THEN
            NULL;
        ELSE
            RAISE EXCEPTION 'incorrect option: %', key USING ERRCODE = '42601';
        END IF;
    END LOOP;
END $$;

-- PgxcNodeAlter: the row is found by name whatever its type (ALTER NODE and ALTER GTM NODE alike).
CREATE OR REPLACE FUNCTION opsh_lab.alter_node(node text, options text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    parsed record;
    kind "char";
BEGIN
    SELECT node_type INTO kind FROM public.pgxc_node WHERE node_name = node;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'PGXC Node %: object not defined', node USING ERRCODE = '42704';
    END IF;
    parsed := opsh_lab.node_options(options);
    IF kind = 'G' AND (parsed.host IS NULL OR parsed.port IS NULL) THEN
        RAISE EXCEPTION 'PGXC node %: host, port should be specified', node USING ERRCODE = 'XX000';
    END IF;
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'cannot assign TransactionIds during recovery' USING ERRCODE = 'XX000';
    END IF;
    UPDATE public.pgxc_node
       SET node_host = coalesce(parsed.host, node_host), node_port = coalesce(parsed.port, node_port)
     WHERE node_name = node;
END $$;

CREATE OR REPLACE FUNCTION public.pgxc_pool_reload() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO opsh_lab.pool_reloads DEFAULT VALUES;
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION opsh_lab.pool_reload_in_block() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgxc_pool_reload cannot run inside a transaction block' USING ERRCODE = '25001';
END $$;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_opentenbase_statements() {
        assert_eq!(
            rewrite("alter node DN01 with (host='172.16.0.47',port=23001);", false).as_deref(),
            Some("SELECT opsh_lab.alter_node('dn01', 'host=''172.16.0.47'',port=23001')")
        );
        assert_eq!(
            rewrite("ALTER GTM NODE \"Gtm_1\" WITH (host='10.0.0.2', port=21000)", false).as_deref(),
            Some("SELECT opsh_lab.alter_node('Gtm_1', 'host=''10.0.0.2'', port=21000')")
        );
        assert_eq!(rewrite("ALTER CLUSTER NODE dn01 WITH (port=1)", false).as_deref(), Some("SELECT opsh_lab.alter_node('dn01', 'port=1')"));
        assert_eq!(rewrite("SELECT * FROM pgxc_node", false), None);
        assert_eq!(rewrite("ALTER TABLE t ADD c int", false), None);
        assert_eq!(rewrite("SELECT pgxc_pool_reload()", false), None);
        assert_eq!(rewrite("SELECT pgxc_pool_reload()", true).as_deref(), Some("SELECT opsh_lab.pool_reload_in_block()"));
    }
}
