-- The analytics schema: what analysts may see. No names, emails, phones, street addresses,
-- birth dates or free text; customers appear as customer_key, a keyed hash of customer_id that is
-- stable across runs (joins work) and cannot be reversed without the warehouse's secret key.

create or replace view analytics.customers as
with
key as (select key from governance.secret_key limit 1),
final as (
    select
        sha256((select key from key) || customer_id) as customer_key,
        city,
        state,
        country,
        age_band,
        date_trunc('month', customer_since) as customer_since_month,
        sources_seen,
        source_count,
        record_count,
        order_count,
        lifetime_value_usd,
        first_order_at,
        last_order_at,
        interaction_count,
        last_contact_at,
        preferred_contact_channel,
        open_issues,
        average_csat,
        latest_nps,
        latest_nps_category,
        email_marketing_consent,
        sms_marketing_consent,
        analytics_consent,
        third_party_sharing_consent,
        is_email_contactable,
        is_sms_contactable,
    from mart.customers
)
select * from final;

create or replace view analytics.orders as
select
    sha256((select key from governance.secret_key limit 1) || order_id) as order_key,
    sha256((select key from governance.secret_key limit 1) || customer_id) as customer_key,
    ordered_at, amount, currency, amount_usd, status,
from mart.orders;

create or replace view analytics.interactions as
select
    sha256((select key from governance.secret_key limit 1) || interaction_id) as interaction_key,
    sha256((select key from governance.secret_key limit 1) || customer_id) as customer_key,
    channel, started_at, duration_seconds, queue, topic, resolution, is_open, csat,
from mart.interactions;

create or replace view analytics.survey_responses as
select
    sha256((select key from governance.secret_key limit 1) || response_id) as response_key,
    sha256((select key from governance.secret_key limit 1) || customer_id) as customer_key,
    submitted_at, nps, nps_category,
from mart.survey_responses;

create or replace view analytics.consent_ledger as
select
    sha256((select key from governance.secret_key limit 1) || customer_id) as customer_key,
    purpose, state, effective_at, source,
from governance.consent_ledger;
