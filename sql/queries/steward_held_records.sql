-- Records privacy requests left to a steward: each record an erasure or an access export held
-- back (joined to the requester only through weaker links, or only by a family's shared phone or
-- inbox), with the request, why, the customer the record belongs to now and what it says, for a
-- steward to decide. No parameters. One row per held record and request, newest first.
with
held as (
    select 'erasure' as request_type, * from governance.erasure_held_records
    union all by name
    select 'access' as request_type, * from governance.access_held_records
),
final as (
    select
        held.held_at,
        held.request_type,
        held.request_id,
        held.reason,
        held.source,
        held.source_record_id,
        held.customer_id as customer_id_at_request,
        xref.customer_id as customer_id_now,
        xref.link_method,
        person.first_name,
        person.last_name,
        person.email,
        person.phone_e164 as phone,
        person.birth_date,
        person.street_key as street,
        person.postal_code,
    from held
    left join mart.customer_xref as xref
        on xref.source = held.source and xref.source_record_id = held.source_record_id
    left join identity.person_records as person using (record_key)
)
select * from final
order by held_at desc, request_id, source, source_record_id
