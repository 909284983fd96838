-- Customers merged from the most sources: where the identity graph joined the most channels.
-- Parameter: $limit (rows to return). One row per customer.
with
xref as (select * from mart.customer_xref where customer_id is not null),
per_customer as (
    select
        customer_id,
        count(distinct source) as source_count,
        count(*) as record_count,
        string_agg(distinct source, ', ' order by source) as sources,
    from xref
    group by 1
),
final as (
    select per_customer.*, customers.first_name, customers.last_name
    from per_customer
    join mart.customers as customers using (customer_id)
)
select * from final
order by source_count desc, record_count desc, customer_id
limit $limit
