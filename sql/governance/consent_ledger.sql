-- governance.consent_ledger: one row per customer and purpose: the current consent state.
-- The latest event by event time wins, whenever it arrived, so an older grant that lands late
-- never undoes a newer revocation; at the same instant a revocation wins.
with
events as (select * from mart.consent_events where customer_id is not null),
ranked as (
    select
        *,
        row_number() over (
            partition by customer_id, purpose
            order by event_at desc, case action when 'revoke' then 0 else 1 end, event_id
        ) as position,
    from events
),
final as (
    select
        customer_id,
        purpose,
        case action when 'grant' then 'granted' else 'revoked' end as state,
        event_at as effective_at,
        source,
        event_id,
    from ranked
    where position = 1
)
select * from final
