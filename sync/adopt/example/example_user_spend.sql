{#- feature-store example (python -m sync init): a feature view. Its metadata (entities, event
    timestamp, owner, feature types) is in _feature_store_example.yml; dbt writes it to the lake
    as Parquet, `python -m sync` publishes and materializes it. -#}
select
    example_user_id,
    -- the end of the day the values cover: when they became known
    cast(date_trunc('day', event_at) + interval 1 day as timestamp) as event_timestamp,
    count(*) as purchases_1d,
    sum(amount) as amount_1d
from {{ ref('example_events') }}
group by 1, 2
