-- Consent events from the consent source, with their customer.
with
events as (select * from staging.consent_events_current),
xref as (select record_key, customer_id from mart.customer_xref),
final as (
    select
        events.event_id,
        xref.customer_id,
        events.purpose,
        events.action,
        events.event_at,
        coalesce(events.source, 'consent_events') as source,
    from events
    left join xref on xref.record_key = 'consent_events:' || events.event_id
)
select * from final
