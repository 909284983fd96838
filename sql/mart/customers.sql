-- mart.customers: one row per customer (customer_id), the customer 360.
--   identity     first_name, last_name, email, phone, street .. country, birth_date (survivorship)
--   descriptive  age_band, customer_since, sources_seen, source_count, record_count, account_owner
--   behavioral   orders, lifetime value (USD), first/last order, interactions by channel,
--                last contact, preferred contact channel, open issues
--   attitudinal  latest NPS and its category, average CSAT, latest survey comment
--   consent      state per purpose and whether email / SMS contact is allowed now
-- Reads the survivorship result `golden` (registered by the asset) and the mart facts, for the
-- customers `golden` holds (a night that changed few customers registers only theirs).
with
golden as (select * from golden),
xref as (
    select * from mart.customer_xref
    where customer_id in (select customer_id from golden)
),
records as (
    select
        xref.customer_id,
        min(person.event_at) as customer_since,
        string_agg(distinct xref.source, ', ' order by xref.source) as sources_seen,
        count(distinct xref.source) as source_count,
        count(*) as record_count,
    from xref
    left join identity.person_records as person using (record_key)
    group by 1
),
orders as (
    select
        customer_id,
        count(*) filter (where status != 'cancelled') as order_count,
        round(sum(amount_usd) filter (where status not in ('cancelled', 'returned')), 2) as lifetime_value_usd,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at,
    from mart.orders
    where customer_id in (select customer_id from golden)
    group by 1
),
interactions as (
    select
        customer_id,
        count(*) as interaction_count,
        count(*) filter (where channel = 'voice') as voice_interactions,
        count(*) filter (where channel = 'chat') as chat_interactions,
        count(*) filter (where channel = 'email') as email_interactions,
        count(*) filter (where channel = 'sms') as sms_interactions,
        max(started_at) as last_contact_at,
        count(*) filter (where is_open) as open_issues,
        round(avg(csat), 2) as average_csat,
    from mart.interactions
    where customer_id in (select customer_id from golden)
    group by 1
),
-- The channel used most; a tie goes to the one used last, then by name (mode() breaks ties
-- by chance, and a rebuild must not change the answer).
preferred_channel as (
    select customer_id, channel as preferred_contact_channel
    from (
        select customer_id, channel, count(*) as uses, max(started_at) as last_used
        from mart.interactions
        where customer_id in (select customer_id from golden) and channel is not null
        group by all
    )
    qualify row_number() over (
        partition by customer_id order by uses desc, last_used desc nulls last, channel
    ) = 1
),
surveys as (
    select
        customer_id,
        arg_max(nps, submitted_at) as latest_nps,
        arg_max(nps_category, submitted_at) as latest_nps_category,
        arg_max(comment, submitted_at) as latest_survey_comment,
        max(submitted_at) as latest_survey_at,
    from mart.survey_responses
    where customer_id in (select customer_id from golden)
    group by 1
),
consent as (
    select
        customer_id,
        max(state) filter (where purpose = 'email_marketing') as email_marketing_consent,
        max(state) filter (where purpose = 'sms_marketing') as sms_marketing_consent,
        max(state) filter (where purpose = 'analytics') as analytics_consent,
        max(state) filter (where purpose = 'third_party_sharing') as third_party_sharing_consent,
    from governance.consent_ledger
    where customer_id in (select customer_id from golden)
    group by 1
),
final as (
    select
        golden.customer_id,
        golden.first_name,
        golden.last_name,
        golden.email,
        golden.phone,
        golden.street,
        golden.unit,
        golden.city,
        golden.state,
        golden.postal_code,
        coalesce(golden.country, golden.address_country) as country,
        golden.birth_date,
        case
            when golden.birth_date is null then null
            when date_diff('year', golden.birth_date, current_date) < 25 then '18-24'
            when date_diff('year', golden.birth_date, current_date) < 35 then '25-34'
            when date_diff('year', golden.birth_date, current_date) < 45 then '35-44'
            when date_diff('year', golden.birth_date, current_date) < 55 then '45-54'
            when date_diff('year', golden.birth_date, current_date) < 65 then '55-64'
            else '65+'
        end as age_band,
        records.customer_since,
        records.sources_seen,
        records.source_count,
        records.record_count,
        golden.account_owner,
        coalesce(orders.order_count, 0) as order_count,
        coalesce(orders.lifetime_value_usd, 0) as lifetime_value_usd,
        orders.first_order_at,
        orders.last_order_at,
        coalesce(interactions.interaction_count, 0) as interaction_count,
        coalesce(interactions.voice_interactions, 0) as voice_interactions,
        coalesce(interactions.chat_interactions, 0) as chat_interactions,
        coalesce(interactions.email_interactions, 0) as email_interactions,
        coalesce(interactions.sms_interactions, 0) as sms_interactions,
        interactions.last_contact_at,
        preferred_channel.preferred_contact_channel,
        coalesce(interactions.open_issues, 0) as open_issues,
        interactions.average_csat,
        surveys.latest_nps,
        surveys.latest_nps_category,
        surveys.latest_survey_comment,
        coalesce(consent.email_marketing_consent, 'unknown') as email_marketing_consent,
        coalesce(consent.sms_marketing_consent, 'unknown') as sms_marketing_consent,
        coalesce(consent.analytics_consent, 'unknown') as analytics_consent,
        coalesce(consent.third_party_sharing_consent, 'unknown') as third_party_sharing_consent,
        coalesce(golden.email is not null and consent.email_marketing_consent = 'granted', false) as is_email_contactable,
        coalesce(golden.phone is not null and consent.sms_marketing_consent = 'granted', false) as is_sms_contactable,
        current_timestamp as refreshed_at,
    from golden
    left join records using (customer_id)
    left join orders using (customer_id)
    left join interactions using (customer_id)
    left join preferred_channel using (customer_id)
    left join surveys using (customer_id)
    left join consent using (customer_id)
)
select * from final
