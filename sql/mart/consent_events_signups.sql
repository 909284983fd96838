-- Web sign-ups carry an email-marketing opt-in: each becomes a consent event at sign-up time.
with
signups as (select * from staging.web_signups_current where marketing_opt_in is not null),
xref as (select record_key, customer_id from mart.customer_xref),
final as (
    select
        'signup:' || signups.signup_id as event_id,
        xref.customer_id,
        'email_marketing' as purpose,
        case when signups.marketing_opt_in then 'grant' else 'revoke' end as action,
        signups.signed_up_at as event_at,
        'web_signup' as source,
    from signups
    left join xref on xref.record_key = 'web_signups:' || signups.signup_id
)
select * from final
