-- Files of one source whose raw row count differs from staged + quarantined rows.
-- Parameters: $source. One row per unbalanced file.
with
raw_rows as (
    select _file_sha256 as file_sha256, count(*) as raw_rows
    from raw_table
    group by 1
),
staged as (
    select _file_sha256 as file_sha256, count(*) as staged_rows
    from staging_table
    group by 1
),
quarantined as (
    select file_sha256, count(*) as quarantined_rows
    from quarantine.rejected_rows
    where source = $source
    group by 1
),
validated as (
    select file_sha256, source_file
    from raw.file_ledger
    where source = $source and status = 'loaded' and validated_at is not null
        and purged_at is null  -- retention or erasure removed rows on purpose
),
final as (
    select
        validated.source_file,
        coalesce(raw_rows.raw_rows, 0) as raw_rows,
        coalesce(staged.staged_rows, 0) as staged_rows,
        coalesce(quarantined.quarantined_rows, 0) as quarantined_rows
    from validated
    left join raw_rows using (file_sha256)
    left join staged using (file_sha256)
    left join quarantined using (file_sha256)
)
select * from final
where raw_rows != staged_rows + quarantined_rows
