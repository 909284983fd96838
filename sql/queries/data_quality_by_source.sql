-- Data-quality summary per source: files loaded and rejected, rows landed, staged and
-- quarantined, the quarantine rate and the most frequent failed check. One row per source.
with
files as (
    select
        source,
        count(*) filter (where status = 'loaded') as files_loaded,
        count(*) filter (where status = 'rejected') as files_rejected,
        sum(row_count) filter (where status = 'loaded') as rows_landed,
    from raw.file_ledger
    group by 1
),
quarantined as (
    select source, count(*) as rows_quarantined
    from quarantine.rejected_rows
    group by 1
),
checks as (
    select source, unnest(string_split(failed_checks, '; ')) as failed_check
    from quarantine.rejected_rows
),
top_check as (
    select source, mode(failed_check) as most_failed_check
    from checks
    group by 1
),
final as (
    select
        files.source,
        files.files_loaded,
        files.files_rejected,
        coalesce(files.rows_landed, 0) as rows_landed,
        coalesce(files.rows_landed, 0) - coalesce(quarantined.rows_quarantined, 0) as rows_staged,
        coalesce(quarantined.rows_quarantined, 0) as rows_quarantined,
        round(coalesce(quarantined.rows_quarantined, 0) / nullif(files.rows_landed, 0), 4) as quarantine_rate,
        top_check.most_failed_check,
    from files
    left join quarantined using (source)
    left join top_check using (source)
)
select * from final
order by source
