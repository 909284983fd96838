-- Churn risk: customers whose latest NPS answer is a detractor (0-6) and who have an open
-- contact-center issue (unresolved, escalated or pending). One row per customer, most issues first.
with
customers as (select * from mart.customers),
final as (
    select
        customer_id,
        first_name,
        last_name,
        latest_nps,
        latest_survey_comment,
        open_issues,
        last_contact_at,
        lifetime_value_usd,
    from customers
    where latest_nps_category = 'detractor'
        and open_issues > 0
)
select * from final
order by open_issues desc, lifetime_value_usd desc, customer_id
