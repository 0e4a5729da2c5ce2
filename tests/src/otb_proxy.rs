//! Lab stand-in for what OpenTenBase adds to PostgreSQL's SQL, never shipped: a proxy in front of
//! a real PostgreSQL server that speaks the wire protocol byte for byte (startup, SCRAM
//! authentication, queries, COPY and streaming replication all pass through untouched) and only
//! rewrites the two statements PostgreSQL does not have:
//!
//! - `ALTER NODE name WITH (host='…', port=…)` → `SELECT opsh_lab.alter_node('name', 'options')`
//! - `ALTER GTM NODE name WITH (…)`          → `SELECT opsh_lab.alter_gtm_node('name', 'options')`
//!
//! The functions (installed by the lab) validate like OpenTenBase does — an unknown node is
//! `PGXC Node NAME: object not defined`, an unknown option is refused — and update the real
//! `pgxc_node` table; on a standby the update fails as read-only, as ALTER NODE does there.
//! `pgxc_pool_reload()` is a real SQL function that records the reload.
//!
//! TLS: the proxy answers SSLRequest with `N` (no TLS), so lab OpenTenBase nodes use sslmode
//! `prefer`/`disable`; authentication is still a real SCRAM exchange with the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

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
    let downstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let upstream = relay_client(&mut client, &mut server);
    let _ = server.shutdown(Shutdown::Both);
    let _ = downstream.join();
    upstream
}

/// Client → server: typed messages; `Q` (simple query) and `P` (parse) have their SQL rewritten.
fn relay_client(client: &mut TcpStream, server: &mut UnixStream) -> Result<()> {
    loop {
        let mut kind = [0u8; 1];
        if client.read_exact(&mut kind).is_err() {
            return Ok(());
        }
        let length = read_u32(client)? as usize;
        let mut body = vec![0u8; length.saturating_sub(4)];
        client.read_exact(&mut body)?;
        let body = match kind[0] {
            b'Q' => rewrite_query_message(&body),
            b'P' => rewrite_parse_message(&body),
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

fn rewrite_query_message(body: &[u8]) -> Vec<u8> {
    let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).to_string();
    match rewrite(&sql) {
        Some(new) => [new.as_bytes(), &[0]].concat(),
        None => body.to_vec(),
    }
}

fn rewrite_parse_message(body: &[u8]) -> Vec<u8> {
    // name \0 query \0 rest
    let Some(name_end) = body.iter().position(|b| *b == 0) else { return body.to_vec() };
    let Some(query_len) = body[name_end + 1..].iter().position(|b| *b == 0) else { return body.to_vec() };
    let query_end = name_end + 1 + query_len;
    let sql = String::from_utf8_lossy(&body[name_end + 1..query_end]).to_string();
    match rewrite(&sql) {
        Some(new) => [&body[..=name_end], new.as_bytes(), &body[query_end..]].concat(),
        None => body.to_vec(),
    }
}

/// `ALTER [GTM] NODE name WITH (options)` → a call of the lab's validating function.
pub fn rewrite(sql: &str) -> Option<String> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let upper = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
    let (function, name_at) = match (upper(0).as_deref(), upper(1).as_deref(), upper(2).as_deref()) {
        (Some("ALTER"), Some("NODE"), _) => ("alter_node", 2),
        (Some("ALTER"), Some("GTM"), Some("NODE")) => ("alter_gtm_node", 3),
        _ => return None,
    };
    let name = words.get(name_at)?.trim_matches('"');
    let rest = trimmed.splitn(name_at + 2, char::is_whitespace).last()?.trim();
    let options = rest.strip_prefix("WITH").or_else(|| rest.strip_prefix("with")).or_else(|| rest.strip_prefix("With"))?.trim();
    let options = options.strip_prefix('(')?.strip_suffix(')')?;
    Some(format!("SELECT opsh_lab.{function}({}, {})", literal(name), literal(options)))
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
    node_host name NOT NULL,
    nodeis_primary boolean NOT NULL DEFAULT false,
    nodeis_preferred boolean NOT NULL DEFAULT false,
    node_id integer NOT NULL
);
CREATE TABLE IF NOT EXISTS opsh_lab.pool_reloads (at timestamptz NOT NULL DEFAULT clock_timestamp());

CREATE OR REPLACE FUNCTION opsh_lab.node_options(options text, OUT host text, OUT port integer) LANGUAGE plpgsql AS $$
DECLARE
    item text;
    key text;
    value text;
BEGIN
    FOREACH item IN ARRAY regexp_split_to_array(options, '\s*,\s*') LOOP
        key := lower(trim(split_part(item, '=', 1)));
        value := trim(substr(item, strpos(item, '=') + 1));
        IF strpos(item, '=') = 0 THEN
            RAISE EXCEPTION 'syntax error at or near "%"', item USING ERRCODE = '42601';
        END IF;
        value := trim(both '''' from value);
        IF key = 'host' THEN
            host := value;
        ELSIF key = 'port' THEN
            IF value !~ '^[0-9]+$' OR value::bigint < 1 OR value::bigint > 65535 THEN
                RAISE EXCEPTION 'port value is out of range' USING ERRCODE = '22023';
            END IF;
            port := value::integer;
        ELSIF key IN ('type', 'primary', 'preferred', 'cluster') THEN
            NULL;
        ELSE
            RAISE EXCEPTION 'option "%" not recognized', key USING ERRCODE = '42601';
        END IF;
    END LOOP;
END $$;

-- ALTER NODE applies to coordinators and datanodes, ALTER GTM NODE to the GTM.
CREATE OR REPLACE FUNCTION opsh_lab.alter_pgxc_node(node text, options text, types "char"[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    parsed record;
BEGIN
    parsed := opsh_lab.node_options(options);
    IF NOT EXISTS (SELECT 1 FROM public.pgxc_node WHERE node_name = node AND node_type = ANY (types)) THEN
        RAISE EXCEPTION 'PGXC Node %: object not defined', node USING ERRCODE = '42704';
    END IF;
    UPDATE public.pgxc_node
       SET node_host = coalesce(parsed.host, node_host), node_port = coalesce(parsed.port, node_port)
     WHERE node_name = node;
END $$;

CREATE OR REPLACE FUNCTION opsh_lab.alter_node(node text, options text) RETURNS void LANGUAGE sql
    AS $$ SELECT opsh_lab.alter_pgxc_node(node, options, ARRAY['C', 'D']::"char"[]) $$;

CREATE OR REPLACE FUNCTION opsh_lab.alter_gtm_node(node text, options text) RETURNS void LANGUAGE sql
    AS $$ SELECT opsh_lab.alter_pgxc_node(node, options, ARRAY['G']::"char"[]) $$;

CREATE OR REPLACE FUNCTION public.pgxc_pool_reload() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO opsh_lab.pool_reloads DEFAULT VALUES;
    RETURN true;
END $$;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_opentenbase_statements() {
        assert_eq!(
            rewrite("alter node dn01 with (host='172.16.0.47',port=23001);").as_deref(),
            Some("SELECT opsh_lab.alter_node('dn01', 'host=''172.16.0.47'',port=23001')")
        );
        assert_eq!(
            rewrite("ALTER GTM NODE gtm_1 WITH (host='10.0.0.2', port=21000)").as_deref(),
            Some("SELECT opsh_lab.alter_gtm_node('gtm_1', 'host=''10.0.0.2'', port=21000')")
        );
        assert_eq!(rewrite("SELECT * FROM pgxc_node"), None);
        assert_eq!(rewrite("ALTER TABLE t ADD c int"), None);
    }
}
