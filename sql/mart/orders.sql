-- mart.orders: one row per order, with the customer it belongs to and its amount in USD.
with
orders as (select * from staging.orders_current),
xref as (select record_key, customer_id from mart.customer_xref),
rates as (select * from currency_rates),
final as (
    select
        orders.order_id,
        xref.customer_id,
        orders.ordered_at,
        orders.amount,
        orders.currency,
        round(orders.amount * rates.usd_per_unit, 2) as amount_usd,
        orders.status,
    from orders
    left join xref on xref.record_key = 'orders:' || orders.order_id
    left join rates on rates.currency = orders.currency
)
select * from final
