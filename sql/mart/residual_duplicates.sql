-- Pairs of customers that look like one person: same first and last name and the same birth
-- date or the same email. A few are expected (family inboxes, a Jr. and a Sr.); many mean the
-- resolver is missing merges.
with
customers as (
    select customer_id, lower(first_name) as first_name, lower(last_name) as last_name, birth_date, email
    from mart.customers
    where first_name is not null and last_name is not null
),
pairs as (
    select a.customer_id
    from customers as a
    join customers as b
        on a.first_name = b.first_name
        and a.last_name = b.last_name
        and a.customer_id < b.customer_id
        and (a.birth_date = b.birth_date or a.email = b.email)
)
select count(*) as residual_pairs from pairs
