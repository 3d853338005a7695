//! Moving the state between its two backends: every table of a SQLite store copied into an
//! empty PostgreSQL database, or the other way, row for row.
//!
//! The source is read from one consistent snapshot (one read transaction on SQLite, a
//! REPEATABLE READ READ ONLY transaction on PostgreSQL) and streamed: SQLite's rows go
//! through PostgreSQL's binary `COPY`, PostgreSQL's are fetched from a portal [`CHUNK`] rows
//! at a time, so no table is ever held in memory whole. The destination is written in one
//! transaction: a failure leaves it as it was. A copy never merges: a destination holding any
//! row in any table is refused. Both sides must hold exactly the tables and columns of
//! [`TABLES`] at schema version 13; anything else is refused before a row is read, so a table
//! this build does not know is never left behind.

use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, IsolationLevel, Row, Transaction};

use super::{block_on, get, pg, schema, PgStore};
use crate::state::cache::{ensure_member_index, MEMBER_INDEX};
use crate::state::error::{db_path, SqlContext};
use crate::state::{StateError, Store, SCHEMA_VERSION};

/// Rows fetched from PostgreSQL per round trip (a few MB with the cloud cache's JSON).
pub const CHUNK: i32 = 2_000;

/// How a column's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    /// SQLite's 0/1 integer, PostgreSQL's `boolean`.
    Bool,
}

impl Kind {
    /// The declared type in the SQLite schema.
    fn sqlite(self) -> &'static str {
        match self {
            Kind::Text => "TEXT",
            Kind::Int | Kind::Bool => "INTEGER",
        }
    }

    /// `information_schema.columns.data_type` on PostgreSQL.
    fn postgres(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Int => "bigint",
            Kind::Bool => "boolean",
        }
    }

    fn pg_type(self) -> Type {
        match self {
            Kind::Text => Type::TEXT,
            Kind::Int => Type::INT8,
            Kind::Bool => Type::BOOL,
        }
    }
}

/// One table of the state as the copy knows it.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// Every column, in the schema's order.
    pub columns: &'static [(&'static str, Kind)],
    /// The primary key, the order rows are read in.
    pub key: &'static str,
    /// Its first column `id` is a row id: an identity column on PostgreSQL, whose sequence is
    /// set past the copied ids.
    pub serial: bool,
}

use Kind::{Bool, Int, Text};

/// Every table of schema version 13, parents before the tables whose foreign keys name them
/// (`run` before `run_event`). A new table or column fails the layout check on both backends
/// (and this module's tests) until it is listed here.
pub const TABLES: &[Table] = &[
    Table {
        name: "delta_link",
        columns: &[
            ("kind", Text),
            ("link", Text),
            ("updated_at", Text),
            ("select_list", Text),
        ],
        key: "kind",
        serial: false,
    },
    Table {
        name: "cloud_object",
        columns: &[
            ("kind", Text),
            ("id", Text),
            ("props_json", Text),
            ("soft_deleted", Bool),
            ("updated_at", Text),
            ("member_digest", Text),
            ("member_count", Int),
        ],
        key: "kind, id",
        serial: false,
    },
    Table {
        name: "cloud_member",
        columns: &[
            ("group_id", Text),
            ("member_id", Text),
            ("member_type", Text),
        ],
        key: "group_id, member_id",
        serial: false,
    },
    Table {
        name: "anchor",
        columns: &[
            ("cloud_id", Text),
            ("object_guid", Text),
            ("dn", Text),
            ("rule", Text),
            ("updated_at", Text),
        ],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "applied",
        columns: &[("cloud_id", Text), ("hash", Text), ("applied_at", Text)],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "run",
        columns: &[
            ("id", Int),
            ("mode", Text),
            ("started_at", Text),
            ("finished_at", Text),
            ("status", Text),
            ("stats_json", Text),
        ],
        key: "id",
        serial: true,
    },
    Table {
        name: "run_event",
        columns: &[
            ("id", Int),
            ("run_id", Int),
            ("at", Text),
            ("cloud_id", Text),
            ("action", Text),
            ("dn", Text),
            ("detail_json", Text),
            ("outcome", Text),
        ],
        key: "id",
        serial: true,
    },
    Table {
        name: "pending",
        columns: &[("kind", Text), ("id", Text)],
        key: "kind, id",
        serial: false,
    },
    Table {
        name: "meta",
        columns: &[("key", Text), ("value", Text)],
        key: "key",
        serial: false,
    },
    Table {
        name: "quarantine",
        columns: &[
            ("cloud_id", Text),
            ("error", Text),
            ("failures", Int),
            ("first_at", Text),
            ("last_at", Text),
            ("retry_at", Int),
        ],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "intent",
        columns: &[("cloud_id", Text), ("dn", Text), ("run_id", Int)],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "held_delete",
        columns: &[
            ("cloud_id", Text),
            ("dn", Text),
            ("approved", Bool),
            ("held_at", Text),
        ],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "released",
        columns: &[
            ("cloud_id", Text),
            ("dn", Text),
            ("object_guid", Text),
            ("rule", Text),
            ("released_at", Text),
        ],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "held_removal",
        columns: &[
            ("cloud_id", Text),
            ("dn", Text),
            ("removals", Int),
            ("members", Int),
            ("removal_hash", Text),
            ("approved", Bool),
            ("held_at", Text),
        ],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "leaving",
        columns: &[("cloud_id", Text), ("since", Int), ("delete_at", Int)],
        key: "cloud_id",
        serial: false,
    },
    Table {
        name: "link",
        columns: &[("cloud_id", Text), ("target_dn", Text), ("added_at", Text)],
        key: "cloud_id, target_dn",
        serial: false,
    },
    Table {
        name: "outbox",
        columns: &[
            ("id", Int),
            ("key", Text),
            ("rule", Text),
            ("hook", Text),
            ("cloud_id", Text),
            ("event_json", Text),
            ("attempts", Int),
            ("next_at", Int),
            ("state", Text),
            ("last_error", Text),
            ("created_at", Text),
        ],
        key: "id",
        serial: true,
    },
    Table {
        name: "unresolved",
        columns: &[("cloud_id", Text), ("member_id", Text)],
        key: "cloud_id, member_id",
        serial: false,
    },
    Table {
        name: "member_change",
        columns: &[
            ("group_id", Text),
            ("member_id", Text),
            ("member_type", Text),
            ("added", Bool),
        ],
        key: "group_id, member_id",
        serial: false,
    },
];

// The tables above are version 13's; a new version must be listed here first.
const _: () = assert!(SCHEMA_VERSION == 13);

/// PostgreSQL's tables that are not the state's: the schema version, the lease and the
/// presence stamps (which belong to the instances sharing a database, not to the state moved
/// into it).
const PG_OWN_TABLES: &[&str] = &["writeback_schema", "writeback_lease", "writeback_presence"];

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Rows copied per table, in [`TABLES`] order.
    pub tables: Vec<(&'static str, u64)>,
    pub elapsed: Duration,
}

impl Copied {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error(transparent)]
    State(#[from] StateError),

    #[error(
        "cannot copy {source_name} (schema version {}) into {destination} (schema version {}): \
         this build copies schema version {supported} into schema version {supported} only; \
         run this version of writeback on both before copying",
        shown(*source_version), shown(*destination_version)
    )]
    SchemaVersion {
        source_name: String,
        source_version: Option<i64>,
        destination: String,
        destination_version: Option<i64>,
        supported: i64,
    },

    #[error("{source_name} holds no Writeback state (no schema): nothing to copy")]
    NoState { source_name: String },

    #[error(
        "{destination} already holds Writeback state (table {table} has rows): a copy goes into \
         an empty state only and never merges; copy into a new, empty one"
    )]
    NotEmpty {
        destination: String,
        table: &'static str,
    },

    #[error(
        "{side}: {problem}; this build copies the tables of schema version {SCHEMA_VERSION} \
         exactly, so nothing is left behind"
    )]
    Layout { side: String, problem: String },

    #[error("{side}: table {table}, column {column}: {found} cannot be copied")]
    Value {
        side: String,
        table: &'static str,
        column: &'static str,
        found: String,
    },
}

fn shown(v: Option<i64>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

/// One value on its way, typed as both backends store it (a boolean as SQLite's 0/1 is only
/// made a `boolean` for PostgreSQL).
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Cell::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Cell::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Cell::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

// `None` of each column type: the binary COPY checks a value's type even when it is NULL.
const NULL_TEXT: Option<&str> = None;
const NULL_INT: Option<i64> = None;
const NULL_BOOL: Option<bool> = None;
const TRUE: bool = true;
const FALSE: bool = false;

/// The PostgreSQL parameter for `cell` in a column of `kind` (checked by [`sqlite_cell`]).
fn pg_param(cell: &Cell, kind: Kind) -> &(dyn ToSql + Sync) {
    match (cell, kind) {
        (Cell::Null, Text) => &NULL_TEXT,
        (Cell::Null, Int) => &NULL_INT,
        (Cell::Null, Bool) => &NULL_BOOL,
        (Cell::Int(0), Bool) => &FALSE,
        (Cell::Int(_), Bool) => &TRUE,
        (Cell::Int(i), _) => i,
        (Cell::Text(s), _) => s,
    }
}

/// A SQLite value of a column of `kind`, or what is wrong with it. Booleans must be 0 or 1:
/// any other value would not come back as it was.
fn sqlite_cell(v: ValueRef<'_>, kind: Kind) -> Result<Cell, String> {
    match (v, kind) {
        (ValueRef::Null, _) => Ok(Cell::Null),
        (ValueRef::Integer(i), Int) => Ok(Cell::Int(i)),
        (ValueRef::Integer(i @ (0 | 1)), Bool) => Ok(Cell::Int(i)),
        (ValueRef::Text(t), Text) => match std::str::from_utf8(t) {
            // PostgreSQL's text holds no NUL character.
            Ok(s) if !s.contains('\0') => Ok(Cell::Text(s.to_string())),
            Ok(_) => Err("text with a NUL character".into()),
            Err(e) => Err(format!("text that is not UTF-8 ({e})")),
        },
        (other, _) => Err(format!("{:?} value {other:?}", other.data_type())),
    }
}

/// Column `i` of a PostgreSQL row of a column of `kind`.
fn pg_cell(row: &Row, i: usize, kind: Kind, op: &dyn Fn() -> String) -> Result<Cell, StateError> {
    Ok(match kind {
        Text => get::<Option<String>>(row, i, op)?.map_or(Cell::Null, Cell::Text),
        Int => get::<Option<i64>>(row, i, op)?.map_or(Cell::Null, Cell::Int),
        Bool => get::<Option<bool>>(row, i, op)?.map_or(Cell::Null, |b| Cell::Int(i64::from(b))),
    })
}

fn column_list(t: &Table) -> String {
    t.columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A backend's tables with their columns (name, type), as found.
type Layout = Vec<(String, Vec<(String, String)>)>;

/// Compares a backend's tables and columns (name, type) with [`TABLES`].
fn check_layout(
    side: &str,
    found: &Layout,
    kind_name: fn(Kind) -> &'static str,
) -> Result<(), CopyError> {
    let layout = |problem: String| CopyError::Layout {
        side: side.to_string(),
        problem,
    };
    let unknown: Vec<&str> = found
        .iter()
        .map(|(t, _)| t.as_str())
        .filter(|t| !TABLES.iter().any(|k| k.name == *t))
        .collect();
    if !unknown.is_empty() {
        return Err(layout(format!(
            "table(s) this build does not know: {}",
            unknown.join(", ")
        )));
    }
    for table in TABLES {
        let Some((_, columns)) = found.iter().find(|(t, _)| t == table.name) else {
            return Err(layout(format!("table {} is missing", table.name)));
        };
        let expected: Vec<(String, String)> = table
            .columns
            .iter()
            .map(|(c, k)| (c.to_string(), kind_name(*k).to_string()))
            .collect();
        if *columns != expected {
            let show = |cs: &[(String, String)]| {
                cs.iter()
                    .map(|(c, t)| format!("{c} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(layout(format!(
                "table {} has columns ({}), expected ({})",
                table.name,
                show(columns),
                show(&expected)
            )));
        }
    }
    Ok(())
}

// --- the SQLite side --------------------------------------------------------------------------

fn sqlite_name(conn: &rusqlite::Connection) -> String {
    format!("state file {}", db_path(conn))
}

/// The tables of a SQLite database and their columns with their declared types.
fn sqlite_layout(conn: &rusqlite::Connection) -> Result<Layout, StateError> {
    let op = || "read the tables".to_string();
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
             ORDER BY name",
        )
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .ctx(conn, op)?;
    let mut out = Vec::new();
    for name in names {
        let columns = conn
            .prepare("SELECT name, upper(type) FROM pragma_table_info(?1) ORDER BY cid")
            .and_then(|mut s| {
                s.query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(String, String)>>>()
            })
            .ctx(conn, || format!("read the columns of {name}"))?;
        out.push((name, columns));
    }
    Ok(out)
}

/// The highest id an AUTOINCREMENT table ever handed out (it may have been deleted since).
fn sqlite_sequence(conn: &rusqlite::Connection, table: &str) -> Result<i64, StateError> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .ctx(conn, || format!("read the last id of {table}"))
    .map(Option::unwrap_or_default)
}

/// The first table of `conn` holding a row, if any.
fn sqlite_first_nonempty(conn: &rusqlite::Connection) -> Result<Option<&'static str>, StateError> {
    for t in TABLES {
        let any: bool = conn
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", t.name),
                [],
                |r| r.get(0),
            )
            .ctx(conn, || format!("look for rows in {}", t.name))?;
        if any {
            return Ok(Some(t.name));
        }
    }
    Ok(None)
}

// --- the PostgreSQL side ----------------------------------------------------------------------

async fn pg_name(c: &impl GenericClient) -> Result<String, StateError> {
    let op = || "name the database".to_string();
    let row = c
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(pg(op))?;
    let db: String = get(&row, 0, &op)?;
    Ok(format!("PostgreSQL database {db}"))
}

/// The state's tables in the connection's schema, their columns and types, and whether each
/// one's first column is an identity.
async fn pg_layout(c: &impl GenericClient) -> Result<(Layout, Vec<String>), StateError> {
    let op = || "read the tables".to_string();
    let rows = c
        .query(
            "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_identity::text
             FROM information_schema.columns c
             JOIN information_schema.tables t
               ON t.table_schema = c.table_schema AND t.table_name = c.table_name
             WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
             ORDER BY c.table_name, c.ordinal_position",
            &[],
        )
        .await
        .map_err(pg(op))?;
    let mut tables: Layout = Vec::new();
    let mut identities = Vec::new();
    for r in &rows {
        let (table, column, ty, identity): (String, String, String, String) = (
            get(r, 0, &op)?,
            get(r, 1, &op)?,
            get(r, 2, &op)?,
            get(r, 3, &op)?,
        );
        if PG_OWN_TABLES.contains(&table.as_str()) {
            continue;
        }
        if identity == "YES" {
            identities.push(format!("{table}.{column}"));
        }
        match tables.last_mut() {
            Some((t, cols)) if *t == table => cols.push((column, ty)),
            _ => tables.push((table, vec![(column, ty)])),
        }
    }
    Ok((tables, identities))
}

/// [`check_layout`] on PostgreSQL, identity columns included.
async fn pg_check_layout(c: &impl GenericClient, side: &str) -> Result<(), CopyError> {
    let (tables, identities) = pg_layout(c).await?;
    check_layout(side, &tables, Kind::postgres)?;
    let expected: Vec<String> = TABLES
        .iter()
        .filter(|t| t.serial)
        .map(|t| format!("{}.id", t.name))
        .collect();
    let mut found = identities;
    found.sort();
    let mut want = expected;
    want.sort();
    if found != want {
        return Err(CopyError::Layout {
            side: side.to_string(),
            problem: format!(
                "identity columns {}, expected {}",
                found.join(", "),
                want.join(", ")
            ),
        });
    }
    Ok(())
}

/// The id sequence's last value handed out (0 when none was).
async fn pg_last_id(c: &impl GenericClient, table: &str) -> Result<i64, StateError> {
    let op = || format!("read the id sequence of {table}");
    let row = c
        .query_one("SELECT pg_get_serial_sequence($1, 'id')", &[&table])
        .await
        .map_err(pg(op))?;
    let Some(seq) = get::<Option<String>>(&row, 0, &op)? else {
        return Ok(0);
    };
    // The name comes back quoted as an identifier where it needs to be.
    let row = c
        .query_one(
            &format!(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq}"
            ),
            &[],
        )
        .await
        .map_err(pg(op))?;
    get(&row, 0, &op)
}

async fn pg_first_nonempty(c: &impl GenericClient) -> Result<Option<&'static str>, StateError> {
    for t in TABLES {
        let op = || format!("look for rows in {}", t.name);
        let row = c
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {})", t.name), &[])
            .await
            .map_err(pg(op))?;
        if get::<bool>(&row, 0, &op)? {
            return Ok(Some(t.name));
        }
    }
    Ok(None)
}

// --- the copies -------------------------------------------------------------------------------

/// Copies every table of `src` into the PostgreSQL database of `dst`, which must hold no
/// state (its schema is created when it has none). `src` is read in one transaction (its
/// snapshot), `dst` written in one; the id sequences are set past the copied ids (and past
/// the highest run id SQLite ever handed out). The copy holds an exclusive lock on the
/// destination's tables until it commits: an instance starting meanwhile waits for it.
pub async fn sqlite_to_postgres(src: &Store, dst: &mut Client) -> Result<Copied, CopyError> {
    let started = Instant::now();
    let conn = &src.conn;
    let source_name = sqlite_name(conn);
    // A store whose run is undone is already inside its own transaction: one snapshot too.
    let read = match conn.is_autocommit() {
        true => Some(
            conn.unchecked_transaction()
                .ctx(conn, || "begin the read transaction".into())?,
        ),
        false => None,
    };
    let source_version = src.schema_version()?;
    check_layout(&source_name, &sqlite_layout(conn)?, Kind::sqlite)?;

    let t = dst
        .transaction()
        .await
        .map_err(pg(|| "begin the copy".into()))?;
    let destination = pg_name(&t).await?;
    let destination_version = schema::version(&t).await?;
    if source_version != SCHEMA_VERSION || destination_version.is_some_and(|v| v != SCHEMA_VERSION)
    {
        return Err(CopyError::SchemaVersion {
            source_name,
            source_version: Some(source_version),
            destination,
            destination_version,
            supported: SCHEMA_VERSION,
        });
    }
    schema::ensure(&t).await?;
    pg_check_layout(&t, &destination).await?;
    // Nobody writes the tables between the check that they are empty and the commit.
    let all = TABLES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ");
    t.batch_execute(&format!("LOCK TABLE {all} IN ACCESS EXCLUSIVE MODE"))
        .await
        .map_err(pg(|| "lock the tables".into()))?;
    if let Some(table) = pg_first_nonempty(&t).await? {
        return Err(CopyError::NotEmpty { destination, table });
    }

    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let n = sqlite_table_to_pg(conn, &source_name, &t, table).await?;
        if table.serial {
            let floor = sqlite_sequence(conn, table.name)?;
            let op = || format!("set the id sequence of {}", table.name);
            t.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', 'id'),
                                   GREATEST(COALESCE(max(id), 0), $1) + 1, false)
                     FROM {0}",
                    table.name
                ),
                &[&floor],
            )
            .await
            .map_err(pg(op))?;
        }
        copied.push((table.name, n));
    }
    t.commit().await.map_err(pg(|| "commit the copy".into()))?;
    drop(read);
    Ok(Copied {
        tables: copied,
        elapsed: started.elapsed(),
    })
}

/// Streams one SQLite table into PostgreSQL's binary COPY.
async fn sqlite_table_to_pg(
    conn: &rusqlite::Connection,
    source_name: &str,
    t: &Transaction<'_>,
    table: &'static Table,
) -> Result<u64, CopyError> {
    let columns = column_list(table);
    let read_op = || format!("read {}", table.name);
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {columns} FROM {} ORDER BY {}",
            table.name, table.key
        ))
        .ctx(conn, read_op)?;
    let mut rows = stmt.query([]).ctx(conn, read_op)?;
    let write_op = || format!("copy into {}", table.name);
    let sink = t
        .copy_in(&format!(
            "COPY {} ({columns}) FROM STDIN (FORMAT binary)",
            table.name
        ))
        .await
        .map_err(pg(write_op))?;
    let types: Vec<Type> = table.columns.iter().map(|(_, k)| k.pg_type()).collect();
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
    let mut n = 0u64;
    let mut cells = Vec::with_capacity(table.columns.len());
    while let Some(row) = rows.next().ctx(conn, read_op)? {
        cells.clear();
        for (i, (column, kind)) in table.columns.iter().enumerate() {
            let value = row.get_ref(i).ctx(conn, read_op)?;
            let cell = sqlite_cell(value, *kind).map_err(|found| CopyError::Value {
                side: source_name.to_string(),
                table: table.name,
                column,
                found,
            })?;
            cells.push(cell);
        }
        let params: Vec<&(dyn ToSql + Sync)> = cells
            .iter()
            .zip(table.columns)
            .map(|(c, (_, k))| pg_param(c, *k))
            .collect();
        writer.as_mut().write(&params).await.map_err(pg(write_op))?;
        n += 1;
    }
    let written = writer.as_mut().finish().await.map_err(pg(write_op))?;
    if written != n {
        return Err(CopyError::Value {
            side: "PostgreSQL".into(),
            table: table.name,
            column: "*",
            found: format!("{written} row(s) written of {n}"),
        });
    }
    Ok(n)
}

/// Copies every table of the PostgreSQL database of `src` into `dst`, an existing SQLite
/// store holding no state (a new file, or [`Store::open_in_memory`] as a local snapshot).
/// `src` is read in one REPEATABLE READ READ ONLY transaction, `CHUNK` rows at a time; `dst`
/// is written in one transaction. The run id SQLite hands out next follows the PostgreSQL
/// sequence's.
pub async fn postgres_to_sqlite(src: &mut Client, dst: &mut Store) -> Result<Copied, CopyError> {
    let started = Instant::now();
    let t = src
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg(|| "begin the read transaction".into()))?;
    let source_name = pg_name(&t).await?;
    let source_version = schema::version(&t).await?;
    let Some(source_version) = source_version else {
        return Err(CopyError::NoState { source_name });
    };
    let destination = sqlite_name(&dst.conn);
    let destination_version = dst.schema_version()?;
    if source_version != SCHEMA_VERSION || destination_version != SCHEMA_VERSION {
        return Err(CopyError::SchemaVersion {
            source_name,
            source_version: Some(source_version),
            destination,
            destination_version: Some(destination_version),
            supported: SCHEMA_VERSION,
        });
    }
    pg_check_layout(&t, &source_name).await?;

    let w = dst.write_tx(|| "begin the copy".into())?;
    check_layout(&destination, &sqlite_layout(&w)?, Kind::sqlite)?;
    if let Some(table) = sqlite_first_nonempty(&w)? {
        return Err(CopyError::NotEmpty { destination, table });
    }
    // Built once at the end: inserting into it row by row costs more than the rest.
    w.execute_batch(&format!("DROP INDEX IF EXISTS {MEMBER_INDEX}"))
        .ctx(&w, || "drop the member index for the copy".into())?;
    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let n = pg_table_to_sqlite(&t, &w, table).await?;
        if table.serial {
            let last = pg_last_id(&t, table.name).await?;
            // Only AUTOINCREMENT tables (`run`) have a row there; it keeps ids from coming back.
            w.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1",
                rusqlite::params![table.name, last],
            )
            .ctx(&w, || format!("set the last id of {}", table.name))?;
            let autoincrement: bool = w
                .query_row(
                    "SELECT sql LIKE '%AUTOINCREMENT%' FROM sqlite_schema WHERE name = ?1",
                    [table.name],
                    |r| r.get(0),
                )
                .ctx(&w, || format!("read the definition of {}", table.name))?;
            if autoincrement && last > 0 {
                w.execute(
                    "INSERT INTO sqlite_sequence (name, seq)
                     SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
                    rusqlite::params![table.name, last],
                )
                .ctx(&w, || format!("set the last id of {}", table.name))?;
            }
        }
        copied.push((table.name, n));
    }
    ensure_member_index(&w)?;
    w.commit().ctx(&dst.conn, || "commit the copy".into())?;
    t.rollback()
        .await
        .map_err(pg(|| "end the read transaction".into()))?;
    Ok(Copied {
        tables: copied,
        elapsed: started.elapsed(),
    })
}

/// Fetches one PostgreSQL table through a portal, `CHUNK` rows at a time, into SQLite.
async fn pg_table_to_sqlite(
    t: &Transaction<'_>,
    w: &rusqlite::Connection,
    table: &'static Table,
) -> Result<u64, CopyError> {
    let columns = column_list(table);
    let read_op = || format!("read {}", table.name);
    let portal = t
        .bind(
            &format!(
                "SELECT {columns} FROM {} ORDER BY {}",
                table.name, table.key
            ),
            &[],
        )
        .await
        .map_err(pg(read_op))?;
    let placeholders = (1..=table.columns.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let write_op = || format!("copy into {}", table.name);
    let mut insert = w
        .prepare(&format!(
            "INSERT INTO {} ({columns}) VALUES ({placeholders})",
            table.name
        ))
        .ctx(w, write_op)?;
    let mut n = 0u64;
    let mut cells = Vec::with_capacity(table.columns.len());
    loop {
        let rows = t.query_portal(&portal, CHUNK).await.map_err(pg(read_op))?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            cells.clear();
            for (i, (_, kind)) in table.columns.iter().enumerate() {
                cells.push(pg_cell(row, i, *kind, &read_op)?);
            }
            insert
                .execute(rusqlite::params_from_iter(cells.iter()))
                .ctx(w, write_op)?;
            n += 1;
        }
    }
    Ok(n)
}

impl PgStore {
    /// Copies the whole state into `dst`, an empty SQLite store (e.g. one in memory, as a
    /// local snapshot for reading), from one consistent snapshot: see [`postgres_to_sqlite`].
    pub fn copy_into(&mut self, dst: &mut Store) -> Result<Copied, CopyError> {
        let PgStore { client, handle, .. } = self;
        block_on(handle, postgres_to_sqlite(client, dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_and_column_of_the_sqlite_schema_is_copied() -> anyhow::Result<()> {
        let store = Store::open_in_memory()?;
        let found = sqlite_layout(&store.conn)?;
        // A table or column added to the schema and not listed in TABLES fails here.
        check_layout("new store", &found, Kind::sqlite)?;
        assert_eq!(found.len(), TABLES.len());
        Ok(())
    }

    #[test]
    fn an_unknown_table_or_column_is_refused_by_name() -> anyhow::Result<()> {
        let store = Store::open_in_memory()?;
        store.conn.execute_batch("CREATE TABLE surprise (x TEXT)")?;
        let e = check_layout("s", &sqlite_layout(&store.conn)?, Kind::sqlite)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("surprise")),
            "{e:?}"
        );
        let store = Store::open_in_memory()?;
        store
            .conn
            .execute_batch("ALTER TABLE anchor ADD COLUMN extra TEXT")?;
        let e = check_layout("s", &sqlite_layout(&store.conn)?, Kind::sqlite)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("table anchor has columns") && e.contains("extra")),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn the_tables_are_in_an_order_the_foreign_keys_accept() -> anyhow::Result<()> {
        let store = Store::open_in_memory()?;
        for (i, t) in TABLES.iter().enumerate() {
            let parents: Vec<String> = store
                .conn
                .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")?
                .query_map([t.name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for p in parents {
                let at = TABLES.iter().position(|x| x.name == p);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{} before its parent {p}",
                    t.name
                );
            }
        }
        Ok(())
    }

    #[test]
    fn values_are_checked_against_their_column() {
        assert_eq!(sqlite_cell(ValueRef::Integer(1), Bool), Ok(Cell::Int(1)));
        assert_eq!(sqlite_cell(ValueRef::Null, Bool), Ok(Cell::Null));
        assert!(
            sqlite_cell(ValueRef::Integer(2), Bool).is_err(),
            "2 is no boolean"
        );
        assert!(sqlite_cell(ValueRef::Text(b"1"), Int).is_err());
        assert!(sqlite_cell(ValueRef::Integer(1), Text).is_err());
        assert!(sqlite_cell(ValueRef::Text(b"a\0b"), Text).is_err());
        assert!(sqlite_cell(ValueRef::Text(&[0xff]), Text).is_err());
        assert_eq!(
            sqlite_cell(ValueRef::Text("é".as_bytes()), Text),
            Ok(Cell::Text("é".into()))
        );
    }

    #[test]
    fn a_schema_mismatch_names_both_versions() {
        let e = CopyError::SchemaVersion {
            source_name: "state file /s.db".into(),
            source_version: Some(12),
            destination: "PostgreSQL database wb".into(),
            destination_version: Some(13),
            supported: 12,
        }
        .to_string();
        assert!(
            e.contains("state file /s.db (schema version 12)")
                && e.contains("PostgreSQL database wb (schema version 13)"),
            "{e}"
        );
    }
}
