-- Tables whose shape does not depend on the source registry. Created idempotently at the start
-- of every stage that writes them; downstream users may rely on every name and column here.

-- One row per landing file seen, loaded or rejected. A file (by content hash) loads once.
create table if not exists raw.file_ledger (
    source varchar not null,
    source_file varchar not null,
    file_sha256 varchar not null,
    file_bytes bigint,
    row_count bigint,
    status varchar not null,          -- loaded | rejected
    error varchar,                    -- why a file was rejected (never contains row values)
    spec_hash varchar,                -- registry entry the file was read with
    loaded_at timestamp not null,
    run_id varchar,
    validated_at timestamp,
    suppressed_rows bigint default 0, -- rows of erased people not landed (suppression list)
    purged_at timestamp,              -- last time rows were removed by retention or erasure
    purged_rows bigint default 0,     -- landed rows removed by retention
    erased_rows bigint default 0,     -- landed rows removed by erasure
    acknowledged_at timestamp         -- a steward accepted a rejected file (`cdm acknowledge-file`)
);
alter table raw.file_ledger add column if not exists purged_rows bigint default 0;
alter table raw.file_ledger add column if not exists erased_rows bigint default 0;
alter table raw.file_ledger add column if not exists acknowledged_at timestamp;

-- One row per source row that failed its contract, with every failed check.
create table if not exists quarantine.rejected_rows (
    source varchar not null,
    source_file varchar not null,
    file_sha256 varchar not null,
    row_number bigint not null,
    record_id varchar,
    failed_checks varchar not null,
    raw_row varchar,                  -- the row as landed, JSON
    quarantined_at timestamp not null,
    run_id varchar
);

-- One row per asset materialisation and source: the history that row-count anomaly checks read.
create table if not exists governance.load_history (
    run_id varchar,
    source varchar not null,
    stage varchar not null,
    rows_in bigint not null,
    recorded_at timestamp not null
);

-- One row per action per run: what the pipeline did to personal data, for auditors.
create table if not exists governance.audit_log (
    run_id varchar,
    action varchar not null,          -- ingested | quarantined | resolved | merged | erased | purged | exported ...
    object varchar not null,          -- the table or export acted on
    row_count bigint not null,
    detail varchar,                   -- counts and hashed ids only, never PII
    logged_at timestamp not null
);
