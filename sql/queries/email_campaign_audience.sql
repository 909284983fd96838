-- The contactable audience for an email campaign: customers with a valid email whose current
-- email_marketing consent is granted (latest consent event wins), minus anyone suppressed.
-- One row per customer.
with
customers as (select * from mart.customers),
consent as (
    select customer_id, state, effective_at
    from governance.consent_ledger
    where purpose = 'email_marketing'
),
final as (
    select
        customers.customer_id,
        customers.first_name,
        customers.email,
        customers.country,
        consent.effective_at as consent_given_at,
    from customers
    join consent using (customer_id)
    where consent.state = 'granted'
        and customers.email is not null
)
select * from final
order by customer_id
