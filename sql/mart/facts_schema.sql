-- The fact tables of the customer 360, keyed by customer_id. Created afresh (empty) every night
-- before they are rebuilt from staging: replacing a table is instant, while deleting millions of
-- rows from one with a primary key and inserting them again nearly doubled the step on the second
-- night. A deployment without one of the standard channels still gets every table.

-- One row per order. Kept after a customer's erasure with customer_id null (accounting).
create or replace table mart.orders (
    order_id varchar primary key,
    customer_id varchar,
    ordered_at timestamp,
    amount double,
    currency varchar,
    amount_usd double,
    status varchar
);

-- One row per contact-center interaction.
create or replace table mart.interactions (
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
create or replace table mart.survey_responses (
    response_id varchar primary key,
    customer_id varchar,
    submitted_at timestamp,
    nps bigint,
    nps_category varchar,
    comment varchar
);

-- One row per consent event (explicit events and web sign-up opt-ins).
create or replace table mart.consent_events (
    event_id varchar primary key,
    customer_id varchar,
    purpose varchar,
    action varchar,
    event_at timestamp,
    source varchar
);
