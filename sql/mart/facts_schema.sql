-- The fact tables of the customer 360, keyed by customer_id. Created empty so that a deployment
-- without one of the standard channels still gets every table (and mart.customers still builds).

-- One row per order. Kept after a customer's erasure with customer_id null (accounting).
create table if not exists mart.orders (
    order_id varchar primary key,
    customer_id varchar,
    ordered_at timestamp,
    amount double,
    currency varchar,
    amount_usd double,
    status varchar
);

-- One row per contact-center interaction.
create table if not exists mart.interactions (
    interaction_id varchar primary key,
    customer_id varchar,
    channel varchar,
    started_at timestamp,
    duration_seconds bigint,
    queue varchar,
    topic varchar,
    resolution varchar,
    is_open boolean,
    csat bigint
);

-- One row per survey response.
create table if not exists mart.survey_responses (
    response_id varchar primary key,
    customer_id varchar,
    submitted_at timestamp,
    nps bigint,
    nps_category varchar,
    comment varchar
);

-- One row per consent event (explicit events and web sign-up opt-ins).
create table if not exists mart.consent_events (
    event_id varchar primary key,
    customer_id varchar,
    purpose varchar,
    action varchar,
    event_at timestamp,
    source varchar
);
