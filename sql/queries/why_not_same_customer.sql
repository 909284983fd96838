-- Why are these two source records NOT the same customer? The fields that argued against the
-- link (negative match weight) and the decision: 'cannot-link' (a different first name or birth
-- date that what a household does not share could not outweigh), 'no match' (probability under the threshold), or linked=false after the clustering
-- guard refused to join their customers. Parameters: $source_l, $record_id_l, $source_r, $record_id_r.
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
weights as (
    unpivot (select profile_id_l, columns(lambda c: c like '%_weight' and c != 'match_weight') from pair)
    on columns(lambda c: c like '%_weight' and c != 'match_weight')
    into name comparison value weight
),
final as (
    select
        records.customer_l,
        records.customer_r,
        coalesce(pair.decision, 'no pair kept: never compared, or far from a match (under resolve.floor_weight)') as decision,
        coalesce(pair.linked, false) as linked,
        round(pair.match_probability, 4) as match_probability,
        (
            select string_agg(replace(comparison, '_weight', '') || ' ' || round(weight, 1), ', ' order by weight)
            from weights
            where weight < 0
        ) as evidence_against,
    from records
    left join pair on true
)
select * from final
