-- Why are these two source records the same customer (or not)? The evidence between them,
-- field by field: each comparison's level (as a label) and its match weight (bits for one person
-- against two strangers), what the chance of two people of one household takes back, then the
-- total (the prior and all of these: the log2-odds of one person).
-- Parameters: $source_l, $record_id_l, $source_r, $record_id_r.
-- One row per comparison, plus a 'total' row with the probability, the decision and whether the
-- two records share a customer. No rows: the pair was never a candidate (no blocking rule
-- brought them together), so nothing linked them directly.
with
records as (
    select
        max(case when source = $source_l and source_record_id = $record_id_l then profile_id end) as profile_l,
        max(case when source = $source_r and source_record_id = $record_id_r then profile_id end) as profile_r,
        max(case when source = $source_l and source_record_id = $record_id_l then customer_id end) as customer_l,
        max(case when source = $source_r and source_record_id = $record_id_r then customer_id end) as customer_r,
    from mart.customer_xref
),
pair as (
    select match_pairs.*
    from identity.match_pairs as match_pairs, records
    where match_pairs.profile_id_l = least(records.profile_l, records.profile_r)
        and match_pairs.profile_id_r = greatest(records.profile_l, records.profile_r)
),
levels as (
    unpivot (select * exclude (match_weight, match_probability) from pair)
    on columns('.*_level$')
    into name comparison value level
),
weights as (
    unpivot (select profile_id_l, profile_id_r, columns(lambda c: c like '%_weight' and c not in ('match_weight', 'household_weight')) from pair)
    on columns(lambda c: c like '%_weight' and c not in ('match_weight', 'household_weight'))
    into name comparison value weight
),
parameters as (
    select comparison, level, label
    from identity.model_parameters
    where run_id = (select max_by(run_id, rowid) from identity.model_parameters)
),
evidence as (
    select
        replace(levels.comparison, '_level', '') as comparison,
        coalesce(parameters.label, 'missing on one side') as evidence,
        round(weights.weight, 2) as match_weight,
    from levels
    join weights on weights.comparison = replace(levels.comparison, '_level', '_weight')
    left join parameters
        on parameters.comparison = replace(levels.comparison, '_level', '')
        and parameters.level = levels.level
),
household as (
    select
        'household' as comparison,
        'could be two people of one household' as evidence,
        round(pair.household_weight, 2) as match_weight,
    from pair
),
total as (
    select
        'total' as comparison,
        pair.decision || case when pair.linked then ' (linked)' else ' (not linked)' end
            || case when records.customer_l = records.customer_r then '; same customer' else '; different customers' end
            as evidence,
        round(pair.match_weight, 2) as match_weight,
    from pair, records
),
final as (
    select * from evidence
    union all
    select * from household
    union all
    select * from total
)
select * from final
