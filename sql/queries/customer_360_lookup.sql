-- Customer 360 lookup: who is the customer behind this email or phone number?
-- Parameters: $email (any case/spacing, or null), $phone (E.164, e.g. +12125550134, or null).
-- One row per matching customer (several if a family shares the address or number).
with
wanted as (
    select lower(trim($email)) as email, $phone as phone
),
matching_records as (
    select distinct person.record_key
    from identity.person_records as person, wanted
    where person.email = wanted.email
        or person.email_norm = wanted.email
        or lower(trim(person.email_raw)) = wanted.email
        or person.phone_e164 = wanted.phone
),
matching_customers as (
    select distinct xref.customer_id
    from matching_records
    join mart.customer_xref as xref using (record_key)
    where xref.customer_id is not null
),
final as (
    select customers.*
    from matching_customers
    join mart.customers as customers using (customer_id)
)
select * from final
order by customer_id
