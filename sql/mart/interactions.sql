-- mart.interactions: one row per contact-center interaction; is_open = not yet resolved.
with
interactions as (select * from staging.support_interactions_current),
xref as (select record_key, customer_id from mart.customer_xref),
final as (
    select
        interactions.interaction_id,
        xref.customer_id,
        interactions.channel,
        interactions.started_at,
        interactions.duration_seconds,
        interactions.queue,
        interactions.topic,
        interactions.resolution,
        coalesce(interactions.resolution in ('unresolved', 'escalated', 'pending'), false) as is_open,
        interactions.csat,
    from interactions
    left join xref on xref.record_key = 'support_interactions:' || interactions.interaction_id
)
select * from final
