-- mart.survey_responses: one row per survey response, with its NPS category.
with
surveys as (select * from staging.surveys_current),
xref as (select record_key, customer_id from mart.customer_xref),
final as (
    select
        surveys.response_id,
        xref.customer_id,
        surveys.submitted_at,
        surveys.nps,
        case
            when surveys.nps >= 9 then 'promoter'
            when surveys.nps >= 7 then 'passive'
            else 'detractor'
        end as nps_category,
        surveys.comment,
    from surveys
    left join xref on xref.record_key = 'surveys:' || surveys.response_id
)
select * from final
