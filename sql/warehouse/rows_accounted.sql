-- Loaded files of one source whose rows do not add up. Parameters: $source.
-- Every landed row is still in raw or was removed on purpose and counted (retention: purged_rows,
-- erasure: erased_rows), and every raw row is staged or quarantined:
--     row_count = raw_rows + purged_rows + erased_rows    and    raw_rows = staged_rows + quarantined_rows
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
    select file_sha256, source_file, row_count, purged_rows, erased_rows
    from raw.file_ledger
    where source = $source and status = 'loaded' and validated_at is not null
),
final as (
    select
        validated.source_file,
        validated.row_count as landed_rows,
        coalesce(raw_rows.raw_rows, 0) as raw_rows,
        coalesce(staged.staged_rows, 0) as staged_rows,
        coalesce(quarantined.quarantined_rows, 0) as quarantined_rows,
        coalesce(validated.purged_rows, 0) as purged_rows,
        coalesce(validated.erased_rows, 0) as erased_rows
    from validated
    left join raw_rows using (file_sha256)
    left join staged using (file_sha256)
    left join quarantined using (file_sha256)
)
select * from final
where landed_rows != raw_rows + purged_rows + erased_rows
    or raw_rows != staged_rows + quarantined_rows
